"""An archive built by the real torch-model-archiver 0.12.0 with a TorchServe-style handler
(`from ts.torch_handler.base_handler import BaseHandler`) answers KServe v1 and v2 requests as
TorchServe's `kserve` and `kservev2` envelopes would hand them to it and wrap its answers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.helpers.clients import call_json, http
from tests.helpers.handlers import TS_DOUBLER
from tests.helpers.server import Server, ServerFactory


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("archive")
    store = root / "store"
    store.mkdir()
    (root / "handler.py").write_text(textwrap.dedent(TS_DOUBLER))
    built = subprocess.run(
        [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", "doubler", "--version", "1.0",
            "--handler", str(root / "handler.py"), "--export-path", str(store),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return make_module_server(
        root=root,
        store=store,
        load=["doubler.mar"],
        models={"doubler": {"1.0": {"batch_size": 4, "max_batch_delay": 50}}},
    )


def post(server: Server, path: str, body: Any) -> tuple[int, Any]:
    return call_json("POST", server.inference + path, json.dumps(body).encode())


def test_v1_instances_are_the_handlers_batch(server: Server) -> None:
    body = {"instances": [{"data": [1, 2]}, {"data": [3.5]}]}
    assert post(server, "/v1/models/doubler:predict", body) == (
        200,
        {"predictions": [[2.0, 4.0], [7.0]]},
    )


def test_v2_inputs_as_the_kservev2_envelope_gives_them(server: Server) -> None:
    request = {
        "id": "ts-1",
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
            {"name": "b", "datatype": "FP32", "shape": [1], "data": [0.25]},
        ],
    }
    status, body = post(server, "/v2/models/doubler/infer", request)
    assert status == 200, body
    assert body["id"] == "ts-1"
    # output i named after input i, flattened, its datatype from the values' numpy dtype
    assert body["outputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [4], "data": [2.0, 4.0, 6.0, 8.0]},
        {"name": "b", "datatype": "FP64", "shape": [1], "data": [0.5]},
    ]
    status, meta = http("GET", f"{server.inference}/v2/models/doubler")
    assert status == 200
    assert json.loads(meta)["inputs"] == []  # a TorchServe handler declares no tensors
