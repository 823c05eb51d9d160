"""OIP v2 through a TorchServe handler: the same archive, the same bodies, on the real TorchServe
0.12 (`service_envelope=kservev2`) and on ours; the handler sees the same rows and the answers
carry the same outputs.

TorchServe runs from its own virtualenv (benchmarks/.venv-torchserve, which `make test` builds).
The archive is built once by the real torch-model-archiver; its handler, written the TorchServe
way, appends what it was handed (each row's type and content) to a file, and answers a list for
a numeric input and a dict for a BYTES one. The servers run one after the other, so each
request's record is the file's last line. TorchServe 0.12 answers KServe v2 bodies on
`/v2/models/{m}/infer` (and `/predictions/{m}`) once the envelope is set in config.properties;
ours needs no setting (README "Where we differ"), so both get the same path and the same bodies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.servers import TorchServe
from tests.support import Server, http, server_config

pytestmark = pytest.mark.skipif(
    not TorchServe.available(),
    reason="needs benchmarks/.venv-torchserve and java (`make test` sets them up)",
)

MODEL = "shapes"

HANDLER = """
    import json

    RECORD = {record!r}


    def handle(data, context):
        if data is None:
            return None
        seen = [
            {{
                "row_type": type(row).__name__,
                "data_type": type(row.get("data")).__name__ if isinstance(row, dict) else None,
                "row": row,
            }}
            for row in data
        ]
        with open(RECORD, "a") as record:
            record.write(json.dumps(seen, default=repr) + "\\n")
        answers = []
        for row in data:
            if row["datatype"] == "BYTES":
                answers.append({{"text": row["data"], "type": type(row["data"]).__name__}})
            else:
                answers.append(row["data"])
        return answers
"""

BODIES: list[dict[str, Any]] = [
    # FP32 with values FP32 cannot hold exactly (0.1) and an integer among floats; BYTES of 2
    {
        "id": "mixed",
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [0.5, -1.25, 0.1, 3]},
            {"name": "words", "shape": [2], "datatype": "BYTES", "data": ["hello", "wörld"]},
        ],
    },
    # integers only, sent nested, for an FP32 input; FP64 and BYTES of 1 beside it
    {
        "id": "ints",
        "inputs": [
            {"name": "n", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
            {"name": "f", "shape": [3], "datatype": "FP64", "data": [0.1, 0.2, 0.3]},
            {"name": "w", "shape": [1], "datatype": "BYTES", "data": ["one"]},
        ],
    },
]

Seen = list[dict[str, Any]]


class KServeV2TorchServe(TorchServe):
    """TorchServe 0.12 with the kservev2 envelope, which it reads from config.properties."""

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        command, env = super().command(preload)
        with open(self.workdir / "config.properties", "a") as config:
            config.write("service_envelope=kservev2\n")
        return command, env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The model store holding shapes.mar, and the handler's record file."""
    inputs = tmp_path_factory.mktemp("inputs")
    store = tmp_path_factory.mktemp("store")
    record = inputs / "seen.jsonl"
    (inputs / "handler.py").write_text(textwrap.dedent(HANDLER.format(record=str(record))))
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver, "--model-name", MODEL, "--version", "1.0",
            "--handler", str(inputs / "handler.py"), "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip
    return store, record


def _ask(management: str, inference: str, record: Path) -> list[tuple[Seen, dict[str, Any]]]:
    """Register the model, send every body; per body what the handler saw and the answer."""
    query = f"url={MODEL}.mar&initial_workers=1&synchronous=true"
    status, raw = http("POST", f"{management}/models?{query}", timeout=120)
    assert status == 200, raw
    results = []
    for body in BODIES:
        deadline = time.monotonic() + 60
        while True:  # TorchServe answers 503 until its worker has loaded the model
            status, raw = http(
                "POST",
                f"{inference}/v2/models/{MODEL}/infer",
                json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling the endpoint until the worker is up
        assert status == 200, (body["id"], raw)
        seen = json.loads(record.read_text().splitlines()[-1])
        results.append((seen, json.loads(raw)))
    record.unlink()
    return results


@pytest.fixture(scope="module")
def torchserve_results(store: tuple[Path, Path]) -> list[tuple[Seen, dict[str, Any]]]:
    server = KServeV2TorchServe(store[0])
    server.start()
    try:
        return _ask(server.management, server.base, store[1])
    finally:
        server.stop()
        server.cleanup()


@pytest.fixture(scope="module")
def our_results(
    store: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Seen, dict[str, Any]]]:
    server = Server(tmp_path_factory.mktemp("ours"), server_config(store[0], enable_model_api=True))
    server.start()
    try:
        return _ask(server.management, server.inference, store[1])
    finally:
        assert server.stop() == 0


def test_the_handler_sees_the_same_rows(
    torchserve_results: list[tuple[Seen, dict[str, Any]]],
    our_results: list[tuple[Seen, dict[str, Any]]],
) -> None:
    for body, (theirs, _), (ours, _) in zip(BODIES, torchserve_results, our_results, strict=True):
        assert ours == theirs, body["id"]


def test_what_torchserve_hands_the_handler(
    torchserve_results: list[tuple[Seen, dict[str, Any]]],
) -> None:
    """The shapes spelled out, so a change on either side reads as what it changed."""
    mixed, ints = (seen for seen, _ in torchserve_results)
    assert mixed == [
        {
            "row_type": "dict",
            "data_type": "list",
            "row": {
                "name": "x",
                "shape": [2, 2],
                "datatype": "FP32",
                # the JSON numbers reshaped, not rounded to FP32 (numpy makes 3 a float here)
                "data": [[0.5, -1.25], [0.1, 3.0]],
            },
        },
        # BYTES: the first element only
        {
            "row_type": "dict",
            "data_type": "str",
            "row": {"name": "words", "shape": [2], "datatype": "BYTES", "data": "hello"},
        },
    ]
    assert ints[0]["row"]["data"] == [[1, 2], [3, 4]]  # integers stay integers, FP32 or not
    assert all(isinstance(v, int) for row in ints[0]["row"]["data"] for v in row)
    assert ints[1]["row"]["data"] == [0.1, 0.2, 0.3]
    assert ints[2]["row"]["data"] == "one"


def test_the_answers_carry_the_same_outputs(
    torchserve_results: list[tuple[Seen, dict[str, Any]]],
    our_results: list[tuple[Seen, dict[str, Any]]],
) -> None:
    for body, (_, theirs), (_, ours) in zip(BODIES, torchserve_results, our_results, strict=True):
        assert ours == theirs, body["id"]
    _, mixed = torchserve_results[0]
    # output i is named after input i, flattened, its datatype from numpy's reading of the value;
    # a dict is one BYTES element that REST carries as the JSON object itself
    assert mixed == {
        "id": "mixed",
        "model_name": MODEL,
        "model_version": "1.0",
        "outputs": [
            {"name": "x", "datatype": "FP64", "shape": [4], "data": [0.5, -1.25, 0.1, 3.0]},
            {
                "name": "words",
                "datatype": "BYTES",
                "shape": [1],
                "data": [{"text": "hello", "type": "str"}],
            },
        ],
    }
    assert torchserve_results[1][1]["outputs"][0]["datatype"] == "INT64"
