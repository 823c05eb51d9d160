"""The container image: deploy/Dockerfile checked against the ServingRuntime and the Makefile
(no container engine on the development machine), `make image` without a builder, and the
real build where podman or buildah is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each line of the Dockerfile, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def container() -> dict[str, object]:
    first: dict[str, object] = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]
    return first


def test_entrypoint_is_the_runtimes_command() -> None:
    entrypoints = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == container()["command"]


def test_what_it_copies_exists_and_is_not_dockerignored() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    copied = []
    for word, rest in instructions():
        if word == "COPY":
            copied += rest.split()[:-1]
    assert {"pyproject.toml", "serve", "handlers"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_torch_is_the_version_the_makefile_pins() -> None:
    pinned = set(re.findall(r"torch==([0-9][0-9.]*)", (ROOT / "Makefile").read_text()))
    assert len(pinned) == 1, pinned
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    assert args["TORCH_VERSION"] == pinned.pop()
    assert "TORCH_INDEX_URL" in args  # the CUDA build argument


def test_it_exposes_the_runtimes_ports() -> None:
    exposed = {
        int(port) for word, rest in instructions() if word == "EXPOSE" for port in rest.split()
    }
    declared = {port["containerPort"] for port in container()["ports"]}  # type: ignore[attr-defined]
    args: list[str] = container()["args"]  # type: ignore[assignment]
    listened = {
        int(arg.rsplit(":", 1)[1]) for arg in args if arg.split("=")[0].endswith("-address")
    }
    assert declared <= exposed
    assert listened - {8085, 7071} <= exposed  # the loopback-only management APIs aside


def test_make_image_without_a_builder_says_what_it_needs(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "bash"):  # make's shell, and nothing that builds images
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    ran = subprocess.run(
        [make, "-s", "image"],
        cwd=ROOT, env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode != 0
    assert "make image: needs podman, buildah or docker" in ran.stderr


@pytest.mark.skipif(
    shutil.which("podman") is None and shutil.which("buildah") is None,
    reason="neither podman nor buildah is installed: the image is not built here",
)
def test_make_image_builds_and_the_image_starts() -> None:
    builder = shutil.which("podman") or shutil.which("buildah")
    assert builder is not None
    built = subprocess.run(
        ["make", "image", "IMAGE=pytorch-serve:test"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    if builder.endswith("podman"):
        ran = subprocess.run(
            [builder, "run", "--rm", "pytorch-serve:test", "--version"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.startswith("serve ")
