"""Archives built by our archiver load and answer alike in the real TorchServe 0.12 and in ours.

TorchServe runs from its own virtualenv (benchmarks/.venv-torchserve, which `make test` builds),
so its top-level `ts` package never enters ours. Both servers get the same store: a TorchScript
model and an eager model (model file + state_dict), in the .mar, .tar.gz and folder formats,
each with a handler written the TorchServe way.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.servers import TorchServe
from tests.helpers.clients import http
from tests.helpers.server import REPO, Server, server_config

pytestmark = [
    pytest.mark.usefixtures("loop_guard"),
    pytest.mark.skipif(
        not TorchServe.available(),
        reason="needs benchmarks/.venv-torchserve and java (`make test` sets them up)",
    ),
]

HANDLER = """
import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class RowHandler(BaseHandler):
    \"\"\"One JSON list of 4 numbers per request; the model's 2 outputs back.\"\"\"

    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray)):
                value = json.loads(value)
            rows.append(value)
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    def postprocess(self, data):
        return [[round(v, 4) for v in row] for row in data.tolist()]
"""

MODEL = """
import torch


class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return torch.tanh(self.linear(x))
"""

INPUT = [0.5, -1.0, 2.0, 0.25]
FORMATS = {"default": ".mar", "tgz": ".tar.gz", "no-archive": ""}


def _archive(inputs: Path, store: Path, name: str, fmt: str, files: list[str]) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "serve.archiver", "--model-name", name, "--version", "1.0",
            "--handler", str(inputs / "row_handler.py"), "--archive-format", fmt,
            "--export-path", str(store), *files,
        ],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[float]]]:
    """Six archives (two models, three formats) and the answer each must give."""
    inputs = tmp_path_factory.mktemp("inputs")
    store = tmp_path_factory.mktemp("store")
    (inputs / "row_handler.py").write_text(textwrap.dedent(HANDLER))
    (inputs / "model.py").write_text(textwrap.dedent(MODEL))
    spec = importlib.util.spec_from_file_location("affine_model", inputs / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(7)
    model = module.Affine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.x
        scripted = torch.jit.trace(model, torch.zeros(1, 4))  # type: ignore[no-untyped-call]
        scripted.save(str(inputs / "scripted.pt"))
    torch.save(model.state_dict(), inputs / "weights.pt")
    with torch.inference_mode():
        expected = [round(v, 4) for v in model(torch.tensor([INPUT])).tolist()[0]]
    kinds = {
        "scripted": ["--serialized-file", str(inputs / "scripted.pt")],
        "eager": [
            "--serialized-file", str(inputs / "weights.pt"),
            "--model-file", str(inputs / "model.py"),
        ],
    }  # fmt: skip
    answers = {}
    for kind, files in kinds.items():
        for fmt, suffix in FORMATS.items():
            name = f"{kind}_{fmt.replace('-', '_')}"
            _archive(inputs, store, name, fmt, files)
            answers[f"{name}{suffix}"] = expected
    return store, answers


@pytest.fixture(scope="module")
def torchserve(store: tuple[Path, dict[str, list[float]]]) -> Iterator[TorchServe]:
    server = TorchServe(store[0])
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()


def _register_and_predict(management: str, inference: str, url: str) -> tuple[str, object]:
    name = url.removesuffix(".mar").removesuffix(".tar.gz")
    query = f"url={url}&initial_workers=1&synchronous=true"
    status, body = http("POST", f"{management}/models?{query}", timeout=120)
    assert status == 200, (url, body)
    deadline = time.monotonic() + 60
    while True:  # TorchServe answers 503 until the worker has loaded the model
        status, body = http(
            "POST",
            f"{inference}/predictions/{name}",
            json.dumps(INPUT).encode(),
            headers={"Content-Type": "application/json"},
        )
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling the endpoint until the worker is up
    assert status == 200, (url, status, body)
    return name, json.loads(body)


def test_torchserve_serves_our_archives(
    store: tuple[Path, dict[str, list[float]]], torchserve: TorchServe
) -> None:
    for url, expected in store[1].items():
        _, answer = _register_and_predict(torchserve.management, torchserve.base, url)
        assert answer == expected, url


def test_ours_serves_them_with_the_same_answers(
    store: tuple[Path, dict[str, list[float]]], tmp_path: Path
) -> None:
    server = Server(tmp_path, server_config(store[0], enable_model_api=True))
    server.start()
    try:
        for url, expected in store[1].items():
            _, answer = _register_and_predict(server.management, server.inference, url)
            assert answer == expected, url
    finally:
        assert server.stop() == 0
