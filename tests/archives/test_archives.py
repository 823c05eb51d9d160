"""Archives: every format loads, hostile ones are refused, torch-model-archiver output serves."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.helpers import handlers as src
from tests.helpers.clients import http
from tests.helpers.server import Server, model_folder, server_config

pytestmark = pytest.mark.usefixtures("loop_guard")


def register(server: Server, url: str, extra: str = "") -> tuple[int, dict[str, object]]:
    status, body = http("POST", f"{server.management}/models?url={url}&initial_workers=1{extra}")
    return status, json.loads(body)


def predict(server: Server, model: str, body: bytes, content_type: str) -> tuple[int, object]:
    status, raw = http(
        "POST",
        f"{server.inference}/predictions/{model}",
        body,
        headers={"Content-Type": content_type},
    )
    return status, json.loads(raw)


def test_zip_stored_zip_deflated_and_tar_gz_archives_load(server: Server, tmp_path: Path) -> None:
    source = model_folder(tmp_path, "fmt", src.ECHO, name="fmt")
    store = server.root / "store"
    for compression, name in (
        (zipfile.ZIP_DEFLATED, "fmt-deflated"),
        (zipfile.ZIP_STORED, "fmt-stored"),
    ):
        with zipfile.ZipFile(store / f"{name}.mar", "w", compression) as archive:
            for path in source.rglob("*"):
                archive.write(path, path.relative_to(source).as_posix())
    with tarfile.open(store / "fmt-tgz.tar.gz", "w:gz") as archive:
        archive.add(source, arcname="fmt-tgz")  # one top-level folder: unwrapped on load
    for url, name in (
        ("fmt-deflated.mar", "fmt_deflated"),
        ("fmt-stored.mar", "fmt_stored"),
        ("fmt-tgz.tar.gz", "fmt_tgz"),
    ):
        status, body = register(server, url, f"&model_name={name}")
        assert status == 200, body
        status, answer = predict(server, name, b"[1]", "application/json")
        assert status == 200
        assert answer["input"] == [1]  # type: ignore[index]
        assert http("DELETE", f"{server.management}/models/{name}")[0] == 200


def test_an_archive_without_manifest_takes_its_name_from_the_file(server: Server) -> None:
    store = server.root / "store"
    with zipfile.ZipFile(store / "nomanifest.mar", "w") as archive:
        archive.writestr("handler.py", textwrap.dedent(src.ECHO))
    status, body = register(server, "nomanifest.mar", "&handler=handler.py")
    assert status == 200, body
    described = json.loads(http("GET", f"{server.management}/models/nomanifest")[1])[0]
    assert (described["modelName"], described["modelVersion"]) == ("nomanifest", "1.0")
    assert http("DELETE", f"{server.management}/models/nomanifest")[0] == 200
    status, body = register(server, "nomanifest.mar", "&model_name=nohandler")
    assert status == 400
    assert "handler" in str(body["message"])


def _zip_with(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0
            archive.writestr(info, target)


@pytest.mark.parametrize(
    "build",
    ["dotdot_zip", "absolute_zip", "symlink_zip", "dotdot_tar", "symlink_tar", "hardlink_tar"],
)
def test_hostile_archives_are_refused_and_write_nothing_outside(
    server: Server, tmp_path: Path, build: str
) -> None:
    store = server.root / "store"
    victim = server.root / "victim"
    handler = textwrap.dedent(src.ECHO).encode()
    name = f"evil-{build}"
    if build == "dotdot_zip":
        _zip_with(store / f"{name}.mar", {"handler.py": handler, "../../victim/pwned": b"x"})
    elif build == "absolute_zip":
        _zip_with(store / f"{name}.mar", {"handler.py": handler, str(victim / "pwned"): b"x"})
    elif build == "symlink_zip":
        _zip_with(store / f"{name}.mar", {"handler.py": handler}, links={"link": "../../../victim"})
    else:
        with tarfile.open(store / f"{name}.tar.gz", "w:gz") as archive:
            data = io.BytesIO(handler)
            info = tarfile.TarInfo("handler.py")
            info.size = len(handler)
            archive.addfile(info, data)
            evil = tarfile.TarInfo("../victim/pwned" if build == "dotdot_tar" else "link")
            if build == "symlink_tar":
                evil.type, evil.linkname = tarfile.SYMTYPE, "/etc"
            elif build == "hardlink_tar":
                evil.type, evil.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
            else:
                evil.size = 1
            archive.addfile(evil, io.BytesIO(b"x") if build == "dotdot_tar" else None)
    url = f"{name}.mar" if build.endswith("zip") else f"{name}.tar.gz"
    status, body = register(server, url, "&handler=handler.py")
    assert status == 400, body
    assert body["type"] == "InvalidModelException"
    assert "Refusing archive" in str(body["message"])
    assert not victim.exists()
    assert http("GET", f"{server.management}/models/{name}")[0] == 404
    assert http("GET", server.inference + "/ping")[0] == 200


def test_an_archive_built_by_the_real_torch_model_archiver_serves_unchanged(
    server: Server, tmp_path: Path
) -> None:
    import torch

    (tmp_path / "handler.py").write_text(textwrap.dedent(src.TS_CLASS_HANDLER))
    (tmp_path / "model.py").write_text(textwrap.dedent(src.TS_MODEL))
    torch.save({"factor": torch.tensor(3.0)}, tmp_path / "scale.pt")
    (tmp_path / "model-config.yaml").write_text("batchSize: 4\nmaxBatchDelay: 20\nminWorkers: 1\n")
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver,
            "--model-name", "scale",
            "--version", "2.5",
            "--model-file", str(tmp_path / "model.py"),
            "--serialized-file", str(tmp_path / "scale.pt"),
            "--handler", str(tmp_path / "handler.py"),
            "--config-file", str(tmp_path / "model-config.yaml"),
            "--export-path", str(server.root / "store"),
        ],
        check=True,
    )  # fmt: skip
    status, body = register(server, "scale.mar")
    assert status == 200, body
    status, answer = predict(server, "scale", b"[1.0, 2.0]", "application/json")
    assert (status, answer) == (200, [3.0, 6.0])
    described = json.loads(http("GET", f"{server.management}/models/scale")[1])[0]
    assert (described["modelVersion"], described["batchSize"], described["maxBatchDelay"]) == (
        "2.5",
        4,
        20,
    )
    assert "customizedMetadata" not in described
    # ?customized=true asks the handler's describe_handle() through a worker
    status, raw = http("GET", f"{server.management}/models/scale?customized=true")
    assert status == 200
    assert json.loads(raw)[0]["customizedMetadata"] == {"factor": 3.0, "device": "cpu"}
    status, raw = http("GET", f"{server.management}/v1/models/scale")
    assert (status, json.loads(raw)) == (200, {"name": "scale", "ready": True})
    assert http("DELETE", f"{server.management}/models/scale")[0] == 200
    assert http("GET", f"{server.management}/v1/models/scale")[0] == 404


def test_load_models_all_loads_every_suffix_the_store_accepts(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name, file in (("zipped", "zipped.zip"), ("marred", "marred.mar")):
        source = model_folder(tmp_path, name, src.ECHO, name=name)
        with zipfile.ZipFile(store / file, "w") as archive:
            for path in source.rglob("*"):
                archive.write(path, path.relative_to(source).as_posix())
    server = Server(tmp_path, server_config(store, load_models="all", default_workers_per_model=1))
    server.start()
    try:
        server.wait_ready()
        listed = json.loads(http("GET", f"{server.management}/models")[1])["models"]
        assert sorted(m["modelName"] for m in listed) == ["marred", "zipped"]
        status, answer = predict(server, "zipped", b"[1]", "application/json")
        assert status == 200
        assert answer["input"] == [1]  # type: ignore[index]
    finally:
        assert server.stop() == 0
