"""TorchServe's handler helpers: `ts.handler_utils.micro_batching` as its example uses it, and
model-config's `pt2:` in BaseHandler (every form), in archives built by the real
torch-model-archiver and served by the real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tests.helpers.clients import concurrently, http
from tests.helpers.server import Server, ServerFactory

# TorchServe's examples/micro_batching handler, on a TorchScript model instead of ResNet
MICRO_BATCHING = """
    import logging

    import torch
    from ts.handler_utils import MicroBatching
    from ts.torch_handler.base_handler import BaseHandler

    logger = logging.getLogger(__name__)


    class MicroBatchingHandler(BaseHandler):
        def __init__(self):
            mb_handle = MicroBatching(self)
            self.handle = mb_handle

        def initialize(self, ctx):
            super().initialize(ctx)
            parallelism = ctx.model_yaml_config.get("micro_batching", {}).get("parallelism", None)
            if parallelism:
                self.handle.parallelism = parallelism
            micro_batch_size = ctx.model_yaml_config.get("micro_batching", {}).get(
                "micro_batch_size", 1
            )
            self.handle.micro_batch_size = micro_batch_size

        def preprocess(self, data):
            rows = [row.get("data") or row.get("body") for row in data]
            return torch.tensor([float(row.decode()) for row in rows])

        def postprocess(self, data):
            # which slice this was: micro-batching calls the stages once per slice
            return [{"value": v, "slice": self.handle.get_micro_batch_idx()} for v in data.tolist()]
"""

# an eager model (torch.compile refuses TorchScript ones), loaded by BaseHandler from its
# modelFile and state_dict
MODEL = """
    import torch


    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2
"""

# BaseHandler's model loading and pt2 handling, with inputs as numbers
PLAIN = """
    import torch
    from ts.torch_handler.base_handler import BaseHandler


    class Doubling(BaseHandler):
        def preprocess(self, data):
            rows = [row.get("data") or row.get("body") for row in data]
            return torch.tensor([float(row.decode()) for row in rows])

        def postprocess(self, data):
            compiled = hasattr(self.model, "_orig_mod")  # what torch.compile wraps
            return [{"value": v, "compiled": compiled} for v in data.tolist()]
"""

PT2_FORMS: dict[str, object] = {
    "pt2new": {"compile": {"enable": True, "backend": "eager"}},
    "pt2str": "eager",
    "pt2dict": {"backend": "aot_eager", "mode": "default"},
    "pt2off": {"compile": {"enable": False, "backend": "eager"}},
    "pt2bogus": {"compile": {"enable": True, "backend": "bogus"}},
}


def _archive(
    work: Path, store: Path, name: str, handler: str, model_config: str, eager: bool = False
) -> None:
    folder = work / name
    folder.mkdir()
    weights = ["--serialized-file", str(work / "double.pt")]
    if eager:
        (folder / "model.py").write_text(textwrap.dedent(MODEL))
        weights = [
            "--model-file",
            str(folder / "model.py"),
            "--serialized-file",
            str(work / "state.pt"),
        ]
    (folder / "handler.py").write_text(textwrap.dedent(handler))
    (folder / "model-config.yaml").write_text(model_config)
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver, "--model-name", name, "--version", "1.0",
            *weights,
            "--handler", str(folder / "handler.py"),
            "--config-file", str(folder / "model-config.yaml"),
            "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    import torch

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    work = tmp_path_factory.mktemp("surface")
    store = work / "store"
    store.mkdir()
    with warnings.catch_warnings():  # TorchScript is deprecated; TorchServe archives hold it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Double()).save(str(work / "double.pt"))  # type: ignore[no-untyped-call]
    torch.save(Double().state_dict(), work / "state.pt")
    micro = (
        "batchSize: 8\nmaxBatchDelay: 500\nminWorkers: 1\nmaxWorkers: 1\n"
        "micro_batching:\n  micro_batch_size: 2\n"
        "  parallelism: {preprocess: 2, inference: 1, postprocess: 2}\n"
    )
    _archive(work, store, "micro", MICRO_BATCHING, micro)
    for name, form in PT2_FORMS.items():
        _archive(work, store, name, PLAIN, json.dumps({"pt2": form}), eager=True)
    names = ["micro", *PT2_FORMS]
    return make_module_server(root=work, store=store, load=[f"{n}.mar" for n in names])


def _predict(server: Server, name: str, value: str) -> dict[str, object]:
    octets = {"Content-Type": "application/octet-stream"}
    status, body = http(
        "POST", f"{server.inference}/predictions/{name}", value.encode(), headers=octets
    )
    assert status == 200, body
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def test_the_micro_batching_example_answers_each_request(server: Server) -> None:
    calls = [{"data": str(i).encode()} for i in range(8)]
    replies = concurrently(f"{server.inference}/predictions/micro", calls)
    answers = [reply.body for reply in replies]
    assert [a["value"] for a in answers] == [2.0 * i for i in range(8)]
    # a batch of several requests went through in slices of micro_batch_size
    assert max(a["slice"] for a in answers) >= 1, answers


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("pt2new", "Compiled model with backend eager"),
        ("pt2str", "Compiled model with backend eager"),
        ("pt2dict", "Compiled model with backend aot_eager, mode default"),
    ],
)
def test_pt2_forms_compile_with_torchserve_log_lines(server: Server, name: str, line: str) -> None:
    assert _predict(server, name, "1.5") == {"value": 3.0, "compiled": True}
    assert line in server.log()


def test_pt2_deprecated_forms_warn_and_unusable_forms_do_not_compile(server: Server) -> None:
    log = server.log()
    assert log.count("This approach of specifying torch.compile() options is deprecated") >= 2
    assert "bogus is not a supported backend" in log
    assert _predict(server, "pt2off", "2") == {"value": 4.0, "compiled": False}
    assert _predict(server, "pt2bogus", "2") == {"value": 4.0, "compiled": False}
