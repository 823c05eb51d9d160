"""Per-model requirements (`--requirements-file`), installed by pip offline from a local wheel."""

from __future__ import annotations

import base64
import hashlib
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.archiver import ArchiveSpec, build_archive
from tests.helpers.clients import request
from tests.helpers.server import Server, serving

HANDLER = """
    import importlib.util


    def handle(data, context):
        if data is None:
            return None
        if importlib.util.find_spec("tinydep") is None:
            return [{"tinydep": None} for _ in data]
        import tinydep

        return [{"tinydep": tinydep.VALUE, "file": tinydep.__file__} for _ in data]
"""


def wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of `tinydep` 0.1 (tinydep.VALUE == 42)."""
    files = {
        "tinydep/__init__.py": b"VALUE = 42\n",
        "tinydep-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 0.1\n",
        "tinydep-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinydep-0.1.dist-info/RECORD,,")
    files["tinydep-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "tinydep-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def archive(name: str, requirements: str, src: Path, store: Path) -> None:
    folder = src / name
    folder.mkdir(parents=True)
    (folder / "dep_handler.py").write_text(textwrap.dedent(HANDLER))
    (folder / "requirements.txt").write_text(requirements)
    build_archive(
        ArchiveSpec(
            model_name=name,
            version="1.0",
            handler=str(folder / "dep_handler.py"),
            extra_files=str(wheel(folder)),
            requirements_file=str(folder / "requirements.txt"),
            export_path=str(store),
        )
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("requirements")
    store = root / "store"
    store.mkdir()
    archive("dep", "--no-index\n./tinydep-0.1-py3-none-any.whl\n", root / "src", store)
    archive("missing", "--no-index\nno-such-package-xyz==1.0\n", root / "src", store)
    return store


@pytest.fixture(scope="module")
def installing(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("installing")
    with serving(root, store=store, enable_model_api=True, install_py_dep_per_model=True) as s:
        yield s


def register(server: Server, url: str) -> tuple[int, dict[str, object]]:
    reply = request(
        "POST", f"{server.management}/models", params={"url": url, "initial_workers": "1"}
    )
    return reply.status, reply.body


def test_requirements_are_installed_for_the_model(installing: Server) -> None:
    status, body = register(installing, "dep.mar")
    assert status == 200, body
    reply = request("POST", f"{installing.inference}/predictions/dep", data=b"x")
    assert reply.status == 200, reply.body
    assert reply.body["tinydep"] == 42
    assert "/.python-deps-" in reply.body["file"]  # the model's own folder, not site-packages

    assert request("DELETE", f"{installing.management}/models/dep").status == 200


def test_failed_install_fails_the_registration(installing: Server) -> None:
    status, body = register(installing, "missing.mar")
    assert status == 400
    assert body["type"] == "InvalidModelException"
    assert "Custom pip package installation failed for model missing" in str(body["message"])
    assert "No matching distribution found for no-such-package-xyz" in str(body["message"])

    listed = request("GET", f"{installing.management}/models").body
    assert "missing" not in [m["modelName"] for m in listed["models"]]
    assert request("GET", f"{installing.inference}/ping").status == 200


def test_requirements_are_skipped_unless_enabled(
    store: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("skipping")
    with serving(root, store=store, enable_model_api=True) as running:
        status, body = register(running, "missing.mar")
        assert status == 200, body  # a warning, then loaded as TorchServe does
        reply = request("POST", f"{running.inference}/predictions/missing", data=b"x")
        assert reply.status == 200
        assert reply.body == {"tinydep": None}
