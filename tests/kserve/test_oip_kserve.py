"""The kserve SDK's clients (InferenceRESTClient v1 and v2, InferenceGRPCClient, and its
generated stub for metadata) against the running server. The calls run in a child process
(tests/kserve/kserve_calls.py): the SDK cannot share a process with tritonclient.grpc."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers import oip_models
from tests.helpers.server import REPO, ServerFactory

KINDS = {
    "half": [[1.5, 2.5], [3.0, 0.0]],
    "flags": [[False, True], [True, True]],
    "ints": [[10 * 2**40, -30], [0, 70]],
    "words": ["olleh", "ba"],
}


@pytest.fixture(scope="module")
def report(make_module_server: ServerFactory) -> dict[str, Any]:
    server = oip_models.start_with(make_module_server)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.kserve.kserve_calls",
            server.inference,
            server.grpc_inference,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_rest_health_and_readiness(report: dict[str, Any]) -> None:
    rest = report["rest"]
    assert [rest[k]["ok"] for k in ("live", "ready", "model_ready")] == [True, True, True]
    assert rest["model_not_ready"] == {"ok": False}  # unknown model: 404, not ready


def test_rest_infer_json_and_binary(report: dict[str, Any]) -> None:
    rest = report["rest"]
    assert rest["json"] == {"ok": KINDS, "id": "r-1"}
    assert rest["binary"] == {"ok": KINDS, "id": "r-2"}
    assert rest["requested"]["ok"] == {"y": [[2.0, 4.0, 6.0, 8.0]]}


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        ("unknown_model", 404, "Model not found: nope"),
        ("wrong_shape", 400, "input x: shape [2, 2]"),
        ("wrong_datatype", 400, "input x: datatype INT32"),
        ("too_large", 413, "max_request_size"),
        ("v1_unknown", 404, "Model not found: nope"),
    ],
)
def test_rest_errors_carry_the_servers_message(
    report: dict[str, Any], call: str, status: int, words: str
) -> None:
    error = report["rest"][call]["error"]
    assert error["status"] == status
    assert words in error["message"]  # the SDK found our {"error": ...} body


def test_rest_v1(report: dict[str, Any]) -> None:
    rest = report["rest"]
    assert rest["v1_predict"] == {"ok": {"predictions": [[3], [3]]}}
    assert rest["v1_ready"] == {"ok": True}


def test_grpc_health_metadata_and_infer(report: dict[str, Any]) -> None:
    grpc = report["grpc"]
    assert [grpc[k]["ok"] for k in ("live", "ready", "model_ready")] == [True, True, True]
    assert grpc["raw"] == {"ok": KINDS, "version": "1.0", "id": "g-1"}
    assert grpc["typed"]["ok"] == {"rows": [1]}
    assert grpc["versioned"]["ok"] == {"a": [2.0]}
    assert grpc["versioned"]["version"] == "2.0"
    assert grpc["metadata"]["server"] == "serve"
    assert grpc["metadata"]["inputs"][0] == ["half", "FP16", [-1, 2]]


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [
        ("unknown_model", "NOT_FOUND", "nope"),
        ("unknown_version", "NOT_FOUND", "Model version: 9"),
        ("wrong_datatype", "INVALID_ARGUMENT", "input x: datatype INT64"),
        ("too_large", "RESOURCE_EXHAUSTED", "max_request_size"),
    ],
)
def test_grpc_errors(report: dict[str, Any], call: str, code: str, words: str) -> None:
    error = report["grpc"][call]["error"]
    assert error["code"] == code
    assert words in error["message"]
