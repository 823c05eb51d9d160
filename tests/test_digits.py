"""The bundled digits model end to end: trained and archived as `make run` does, then served.

Also: every --archive-format of our archiver, and the real torch-model-archiver's .mar of the
same files, load and serve in our server.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from serve.config import load_config
from tests.server_process import ServerProcess, concurrently, request, running_server
from tests.support import REPO

EXAMPLE = REPO / "examples" / "digits"
FORMATS = {
    "digits": ("default", "digits.mar"),
    "digits_store": ("zip-store", "digits_store.mar"),
    "digits_tgz": ("tgz", "digits_tgz.tar.gz"),
    "digits_dir": ("no-archive", "digits_dir"),
}


def train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_train", EXAMPLE / "train.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def archiver_args(name: str, weights: Path, store: Path) -> list[str]:
    return [
        "--model-name", name, "--version", "1.0",
        "--model-file", str(EXAMPLE / "model.py"), "--serialized-file", str(weights),
        "--handler", "image_classifier",
        "--extra-files", str(EXAMPLE / "index_to_name.json"),
        "--config-file", str(EXAMPLE / "model-config.yaml"), "--export-path", str(store),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("digits")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--out-dir", str(root / "weights")],
        check=True,
        env=env,
    )
    weights = root / "weights" / "digits.pt"
    store = root / "store"
    store.mkdir()
    for name, (archive_format, _) in FORMATS.items():
        args = [*archiver_args(name, weights, store), "--archive-format", archive_format]
        subprocess.run([sys.executable, "-m", "serve.archiver", *args], check=True, env=env)
    real = archiver_args("digits_real", weights, store)
    subprocess.run([sys.executable, "-m", "model_archiver.model_packaging", *real], check=True)
    archives = [file for _, file in FORMATS.values()] + ["digits_real.mar"]
    with running_server(root, store, load_models=archives) as running:
        yield running


@pytest.mark.parametrize("model", [*FORMATS, "digits_real"])
def test_every_archive_format_serves(server: ServerProcess, model: str) -> None:
    sample = (EXAMPLE / "sample_7.png").read_bytes()
    reply = request("POST", f"{server.inference}/predictions/{model}", data=sample)
    assert reply.status == 200, reply.body
    assert next(iter(reply.body)) == "7"  # most likely first
    assert len(reply.body) == 3  # model-config.yaml: handler.topk 3


def test_held_out_digits_are_classified(server: ServerProcess) -> None:
    train = train_module()
    split = train.load_split()
    pngs = [train.png(image) for image in split.held_out_images]
    assert len(pngs) == 300
    replies = concurrently(
        f"{server.inference}/predictions/digits",
        [{"data": png, "headers": {"Content-Type": "image/png"}} for png in pngs],
        limit=32,
    )
    assert all(r.status == 200 for r in replies)
    predicted = [max(r.body, key=r.body.get) for r in replies]
    expected = [str(label) for label in split.held_out_labels.tolist()]
    correct = sum(p == e for p, e in zip(predicted, expected, strict=True))
    assert correct / len(expected) >= 0.95, f"{correct} of {len(expected)} correct"


def test_sample_image_is_a_held_out_seven() -> None:
    train = train_module()
    split = train.load_split()
    held_out = zip(split.held_out_images, split.held_out_labels, strict=True)
    sevens = [image for image, label in held_out if label == 7]
    assert (EXAMPLE / "sample_7.png").read_bytes() == train.png(sevens[0])
    train_pngs = {train.png(image) for image in split.train_images}
    assert train.png(sevens[0]) not in train_pngs


def test_repo_serve_yaml_loads_the_bundled_model() -> None:
    config = load_config(REPO / "serve.yaml")
    assert config.load_models == ("digits.mar",)
    assert config.model_store == REPO / "model_store"
    ports = [
        config.inference_address.port,
        config.management_address.port,
        config.metrics_address.port,
    ]
    assert ports == [8080, 8081, 8082]
