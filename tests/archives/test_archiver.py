"""The archiver CLI against the real torch-model-archiver 0.12.0: same members, same manifest."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tarfile
import tomllib
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.server import REPO

FORMATS = ("default", "zip-store", "tgz", "no-archive")
SUFFIX = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}


def run_ours(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "serve.archiver", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def run_real(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_archiver.model_packaging", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Model artifacts as a user has them: files, a folder with subfolders, hidden and cache."""
    root = tmp_path / "in"
    (root / "extra" / "sub").mkdir(parents=True)
    (root / "extra" / ".git").mkdir()
    (root / "extra" / "__pycache__").mkdir()
    (root / "glob").mkdir()
    (root / "model.py").write_text("import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    (root / "weights.pt").write_bytes(os.urandom(4096))
    (root / "my_handler.py").write_text("def handle(data, context):\n    return data\n")
    (root / "extra" / "index_to_name.json").write_text('{"0": "cat"}')
    (root / "extra" / "sub" / "vocab.txt").write_text("a\nb\n")
    (root / "extra" / ".git" / "HEAD").write_text("ref")
    (root / "extra" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "extra" / ".dotfile").write_text("kept: the real tool filters folders only")
    (root / "glob" / "a.json").write_text("{}")
    (root / "glob" / "b.json").write_text("[]")
    (root / "notes.md").write_text("# notes")
    (root / "extra" / "linked.md").symlink_to(root / "notes.md")
    (root / "extra" / "linked_dir").symlink_to(root / "glob", target_is_directory=True)
    (root / "requirements.txt").write_text("tinydep\n")
    (root / "model-config.yaml").write_text("batchSize: 2\n")
    return root


def members(output: Path, archive_format: str, name: str) -> dict[str, int | None]:
    """Member name → zip compression type (None for tar and folders)."""
    if archive_format in ("default", "zip-store"):
        with zipfile.ZipFile(output) as archive:
            return {info.filename: info.compress_type for info in archive.infolist()}
    if archive_format == "tgz":
        with tarfile.open(output) as archive:
            names = [m.name for m in archive.getmembers() if m.isfile()]
        assert all(n.startswith(f"{name}/") for n in names), names
        return {n.removeprefix(f"{name}/"): None for n in names}
    return {p.relative_to(output).as_posix(): None for p in output.rglob("*") if p.is_file()}


def manifest(output: Path, archive_format: str, name: str) -> dict[str, Any]:
    if archive_format in ("default", "zip-store"):
        with zipfile.ZipFile(output) as archive:
            return dict(json.loads(archive.read("MAR-INF/MANIFEST.json")))
    if archive_format == "tgz":
        with tarfile.open(output) as archive:
            member = archive.extractfile(f"{name}/MAR-INF/MANIFEST.json")
            assert member is not None
            return dict(json.load(member))
    return dict(json.loads((output / "MAR-INF" / "MANIFEST.json").read_text()))


@pytest.mark.parametrize("archive_format", FORMATS)
@pytest.mark.parametrize("handler", ["my_handler.py", "my_handler:handle", "image_classifier"])
def test_same_archive_as_torch_model_archiver(
    inputs: Path, archive_format: str, handler: str
) -> None:
    name = f"cmp-{uuid.uuid4().hex[:8]}"  # the real tool stages files in $TMPDIR/<name>
    args = [
        "--model-name", name, "--version", "2.1", "--model-file", "model.py",
        "--serialized-file", "weights.pt", "--handler", handler,
        "--extra-files", "extra,glob/*.json,notes.md", "-r", "requirements.txt",
        "-c", "model-config.yaml", "--archive-format", archive_format,
    ]  # fmt: skip
    (inputs / "ours").mkdir()
    (inputs / "real").mkdir()
    ours = run_ours([*args, "--export-path", "ours"], inputs)
    real = run_real([*args, "--export-path", "real"], inputs)
    assert ours.returncode == 0, ours.stderr
    assert real.returncode == 0, real.stderr
    ours_path = inputs / "ours" / f"{name}{SUFFIX[archive_format]}"
    real_path = inputs / "real" / f"{name}{SUFFIX[archive_format]}"

    assert members(ours_path, archive_format, name) == members(real_path, archive_format, name)
    found = set(members(ours_path, archive_format, name))
    assert {"sub/vocab.txt", "a.json", ".dotfile", "linked.md", "linked_dir/b.json"} <= found
    assert not any(".git" in n or "__pycache__" in n for n in found)
    assert ("my_handler.py" in found) == (handler != "image_classifier")

    ours_manifest = manifest(ours_path, archive_format, name)
    real_manifest = manifest(real_path, archive_format, name)
    created = ours_manifest.pop("createdOn")
    real_manifest.pop("createdOn")
    datetime.strptime(created, "%d/%m/%Y %H:%M:%S")
    assert ours_manifest == real_manifest
    assert list(ours_manifest["model"]) == list(real_manifest["model"])
    assert ours_manifest["model"]["handler"] == handler


def test_output_inside_an_extra_folder_is_not_archived(inputs: Path) -> None:
    args = ["--model-name", "self", *BASE, "--extra-files", ".", "--archive-format"]
    for archive_format in ("no-archive", "no-archive", "default", "default"):
        result = run_ours([*args, archive_format, "-f"], inputs)
        assert result.returncode == 0, result.stderr
    assert not [name for name in members(inputs / "self", "no-archive", "self") if "self" in name]
    assert "self.mar" not in members(inputs / "self.mar", "default", "self")


def test_optional_manifest_keys_are_omitted(inputs: Path) -> None:
    result = run_ours(
        ["--model-name", "bare", "-v", "1.0", "--handler", "base_handler", "--export-path", "."],
        inputs,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(inputs / "bare.mar") as archive:
        assert archive.namelist() == ["MAR-INF/MANIFEST.json"]
        data = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert set(data) == {"createdOn", "runtime", "model", "archiverVersion"}
    assert data["model"] == {"modelName": "bare", "handler": "base_handler", "modelVersion": "1.0"}
    assert (data["runtime"], data["archiverVersion"]) == ("python", "0.12.0")


def test_handler_path_with_function_copies_the_file(inputs: Path) -> None:
    (inputs / "code").mkdir()
    (inputs / "my_handler.py").rename(inputs / "code" / "my_handler.py")
    result = run_ours(
        ["--model-name", "fn", "-v", "1", "--handler", "code/my_handler.py:handle"], inputs
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(inputs / "fn.mar") as archive:
        assert "my_handler.py" in archive.namelist()
        data = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert data["model"]["handler"] == "my_handler.py:handle"


BASE = ["-v", "1.0", "--handler", "base_handler"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model-name", "bad name", *BASE], "invalid --model-name"),
        (["--model-name=-dash", *BASE], "invalid --model-name"),
        (["--model-name", "a..b", *BASE], "'..'"),
        (["--model-name", "m", *BASE, "--serialized-file", "nope.pt"], "no such file: nope.pt"),
        (["--model-name", "m", *BASE, "--model-file", "extra"], "extra is not a file"),
        (["--model-name", "m", *BASE, "--extra-files", "notes.md,missing.txt"], "missing.txt"),
        (["--model-name", "m", *BASE, "-r", "missing-req.txt"], "missing-req.txt"),
        (["--model-name", "m", "-v", "1", "--handler", "no_such_handler"], "no_such_handler"),
        (["--model-name", "m", "-v", "1", "--handler", "missing.py:fn"], "missing.py:fn"),
        (["--model-name", "m", *BASE, "--export-path", "nowhere"], "is not a folder"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(inputs: Path, args: list[str], expected: str) -> None:
    result = run_ours(args, inputs)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serve-archiver: error: ")
    assert expected in lines[0]
    assert not list(inputs.glob("*.mar"))


@pytest.mark.parametrize("archive_format", FORMATS)
def test_existing_output_needs_force(inputs: Path, archive_format: str) -> None:
    args = ["--model-name", "m", *BASE, "--archive-format", archive_format]
    first = run_ours([*args, "--extra-files", "notes.md"], inputs)
    assert first.returncode == 0, first.stderr
    output = inputs / f"m{SUFFIX[archive_format]}"
    before = members(output, archive_format, "m")

    again = run_ours(args, inputs)
    assert again.returncode == 2
    assert "already exists; pass -f/--force" in again.stderr
    assert members(output, archive_format, "m") == before

    forced = run_ours([*args, "-f"], inputs)
    assert forced.returncode == 0, forced.stderr
    assert set(members(output, archive_format, "m")) == {"MAR-INF/MANIFEST.json"}
    assert not [p for p in inputs.iterdir() if ".partial" in p.name or ".old." in p.name]


def test_missing_required_flag_is_a_usage_error(inputs: Path) -> None:
    result = run_ours(["--model-name", "m", "--handler", "base_handler"], inputs)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "serve-archiver: error: the following arguments are required: -v/--version (see --help)"
    ]


def _run_on_terminal(args: list[str], cwd: Path) -> str:
    """Run our CLI with stderr on a pseudo-terminal; returns what it wrote there."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "serve.archiver", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_progress_only_for_large_files_on_a_terminal(inputs: Path) -> None:
    (inputs / "big.bin").write_bytes(bytes(33 * 2**20))
    args = ["--model-name", "big", *BASE, "--serialized-file", "big.bin", "--extra-files",
            "notes.md", "--archive-format", "zip-store"]  # fmt: skip
    shown = _run_on_terminal(args, inputs)
    assert "adding big.bin: 100%" in shown
    assert "notes.md" not in shown

    piped = run_ours([*args, "-f"], inputs)
    assert piped.returncode == 0
    assert "adding" not in piped.stderr


def test_console_script_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["serve-archiver"] == "serve.archiver.cli:main"
