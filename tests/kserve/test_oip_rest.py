"""The Open Inference Protocol over REST, spoken by hand: health, metadata, readiness, JSON and
binary tensors, tensor handlers batched along dimension 0, TorchServe handlers as the
kservev2 envelope sees them, and the errors (`{"error": ...}` naming the input at fault)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import oip_models
from tests.helpers.clients import call_json, http, metric_samples, poll
from tests.helpers.server import MAX_LOOP_LAG, REPO, Server, ServerFactory

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    return oip_models.start_with(make_module_server)


def get(server: Server, path: str) -> tuple[int, Any]:
    return call_json("GET", server.inference + path)


def infer(server: Server, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", server.inference + path, raw, headers=headers or {})


def infer_json(server: Server, model: str, body: Any) -> tuple[int, Any]:
    status, reply = infer(server, f"/v2/models/{model}/infer", body)
    return status, json.loads(reply)


def test_health_and_server_metadata(server: Server) -> None:
    assert get(server, "/v2/health/live") == (200, {"live": True})
    assert get(server, "/v2/health/ready") == (200, {"ready": True})
    status, body = get(server, "/v2")
    assert status == 200
    assert body["name"] == "serve"
    assert "binary_tensor_data" in body["extensions"]


def test_model_metadata_from_the_handler_and_from_model_config(server: Server) -> None:
    status, body = get(server, "/v2/models/scale")
    assert status == 200
    assert body["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in body["outputs"]] == ["y", "rows"]
    status, body = get(server, "/v2/models/kinds")
    assert [(i["name"], i["datatype"]) for i in body["inputs"]] == [
        ("half", "FP16"),
        ("flags", "BOOL"),
        ("ints", "INT64"),
        ("words", "BYTES"),
    ]


def test_versions_in_metadata_readiness_and_inference(server: Server) -> None:
    status, body = get(server, "/v2/models/ver/versions/2.0")
    assert status == 200
    assert sorted(body["versions"]) == ["1.0", "2.0"]
    assert get(server, "/v2/models/ver/versions/2.0/ready")[0] == 200
    assert get(server, "/v2/models/ver/ready")[0] == 200
    request = {"inputs": [{"name": "a", "datatype": "INT32", "shape": [1], "data": [1]}]}
    for version in ("1.0", "2.0"):
        status, reply = infer(server, f"/v2/models/ver/versions/{version}/infer", request)
        assert status == 200
        assert json.loads(reply)["model_version"] == version
        assert json.loads(reply)["outputs"][0]["data"] == [float(version)]


def test_json_fp32_with_id_and_requested_outputs(server: Server) -> None:
    request = {
        "id": "req-7",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}
        ],
        "outputs": [{"name": "y"}],
    }
    status, body = infer_json(server, "scale", request)
    assert status == 200, body
    assert body["id"] == "req-7"
    assert (body["model_name"], body["model_version"]) == ("scale", "1.0")
    assert body["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": [2, 4, 6, 8, 10, 12, 14, 16]}
    ]


def test_fp16_bool_int64_and_bytes_as_json(server: Server) -> None:
    request = {
        "inputs": [
            {"name": "half", "datatype": "FP16", "shape": [1, 2], "data": [0.5, 1.5]},
            {"name": "flags", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]},
            {"name": "ints", "datatype": "INT64", "shape": [1, 2], "data": [2**40, -3]},
            {"name": "words", "datatype": "BYTES", "shape": [1], "data": ["hello"]},
        ]
    }
    status, body = infer_json(server, "kinds", request)
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["half"]["data"] == [1.5, 2.5]
    assert outputs["flags"]["data"] == [False, True]
    assert outputs["ints"]["data"] == [10 * 2**40, -30]
    assert outputs["words"] == {
        "name": "words",
        "datatype": "BYTES",
        "shape": [1],
        "data": ["olleh"],
    }


def test_binary_inputs_and_outputs(server: Server) -> None:
    x = struct.pack("<8f", *range(8))
    words = b"".join(struct.pack("<I", len(w)) + w for w in (b"ab", b"xyz"))
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [2, 4],
                "parameters": {"binary_data_size": 32},
            }
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "rows"}],
    }
    body, rest = binary_infer(server, "scale", header, x)
    y, rows = body["outputs"]
    assert y["parameters"]["binary_data_size"] == 32
    assert struct.unpack("<8f", rest) == tuple(2.0 * i for i in range(8))
    assert rows["data"] == [2, 2]
    # BYTES both ways
    request = {
        "inputs": [
            {"name": "half", "datatype": "FP16", "shape": [2, 2], "data": [1, 2, 3, 4]},
            {
                "name": "flags",
                "datatype": "BOOL",
                "shape": [2, 2],
                "parameters": {"binary_data_size": 4},
            },
            {"name": "ints", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]},
            {
                "name": "words",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(words)},
            },
        ],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "words"}, {"name": "flags"}],
    }
    body, rest = binary_infer(server, "kinds", request, b"\x01\x00\x00\x01" + words)
    assert [o["name"] for o in body["outputs"]] == ["words", "flags"]
    size = body["outputs"][0]["parameters"]["binary_data_size"]
    assert rest[:size] == b"".join(struct.pack("<I", len(w)) + w for w in (b"ba", b"zyx"))
    assert rest[size:] == b"\x00\x01\x01\x00"


def binary_infer(
    server: Server, model: str, header: dict[str, Any], blob: bytes
) -> tuple[Any, bytes]:
    """POST with the binary extension; the reply's JSON header and its binary part."""
    head = json.dumps(header).encode()
    request = urllib.request.Request(
        f"{server.inference}/v2/models/{model}/infer",
        data=head + blob,
        method="POST",
        headers={HEADER: str(len(head))},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        raw = reply.read()
        length = int(reply.headers.get(HEADER, len(raw)))
    return json.loads(raw[:length]), raw[length:]


def test_torchserve_handler_sees_the_kservev2_envelope(server: Server) -> None:
    request = {
        "id": "t",
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
            {"name": "b", "datatype": "FP64", "shape": [1], "data": [0.5]},
        ],
    }
    status, body = infer_json(server, "sums", request)
    assert status == 200, body
    # output i is named after input i and flattened, as the kservev2 envelope answers
    assert body["outputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [1], "data": [10]},
        {"name": "b", "datatype": "FP64", "shape": [1], "data": [0.5]},
    ]


def test_torchserve_handler_gets_input_dicts_and_dict_answers_are_json(server: Server) -> None:
    request = {
        "inputs": [
            {"name": "img", "datatype": "BYTES", "shape": [1], "data": ["aGk="]},
            {"name": "m", "datatype": "FP32", "shape": [2, 1], "data": [1.5, 2.5]},
        ],
    }
    status, body = infer_json(server, "echo", request)
    assert status == 200, body
    # TorchServe 0.12 (kservev2.py): each input is the request's own input object, BYTES data
    # is data[0], other data np.array(data).reshape(shape).tolist(); a dict answer becomes
    # np.array(answer).flatten(): an object array of shape (1,), datatype BYTES, the dict
    # itself in "data" (json.dumps of the response), named after its input.
    assert body["outputs"] == [
        {
            "name": "img",
            "datatype": "BYTES",
            "shape": [1],
            "data": [{"keys": ["data", "datatype", "name", "shape"], "shape": [1],
                      "type": "str", "data": "aGk="}],
        },
        {
            "name": "m",
            "datatype": "BYTES",
            "shape": [1],
            "data": [{"keys": ["data", "datatype", "name", "shape"], "shape": [2, 1],
                      "type": "list", "data": [[1.5], [2.5]]}],
        },
    ]  # fmt: skip


def test_torchserve_handler_gets_json_numbers_as_sent(server: Server) -> None:
    # the envelope reshapes the JSON numbers, never rounds them to the datatype: 0.1 is not
    # FP32's 0.10000000149..., and integers stay integers (tests/test_v2_vs_torchserve.py)
    request = {"inputs": [{"name": "m", "datatype": "FP32", "shape": [3], "data": [0.1, 3, 2]}]}
    status, body = infer_json(server, "echo", request)
    assert status == 200, body
    seen = body["outputs"][0]["data"][0]["data"]
    assert seen == [0.1, 3.0, 2.0]
    request["inputs"][0]["data"] = [1, 3, 2]
    status, body = infer_json(server, "echo", request)
    seen = body["outputs"][0]["data"][0]["data"]
    assert (status, seen, [type(v) for v in seen]) == (200, [1, 3, 2], [int, int, int])


def test_binary_bytes_input_reaches_the_handler_as_bytes(server: Server) -> None:
    png = b"\x89PNG\r\n\x1a\n\xff"  # not UTF-8, so no str can hold it
    header = json.dumps(
        {"inputs": [{"name": "img", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": 4 + len(png)}}]}
    ).encode()  # fmt: skip
    element = struct.pack("<I", len(png)) + png
    status, reply = infer(
        server, "/v2/models/echo/infer", header + element, {HEADER: str(len(header))}
    )
    assert status == 200, reply
    answer = json.loads(reply)["outputs"][0]["data"][0]
    assert (answer["type"], answer["data"]) == ("bytes", len(png))


def test_a_request_the_handler_fails_is_a_400_with_its_message(server: Server) -> None:
    request = {"inputs": [{"name": "img", "datatype": "BYTES", "shape": [1], "data": ["fail"]}]}
    status, body = infer_json(server, "echo", request)
    assert (status, body) == (400, {"error": "fail was sent"})


def test_explain_sets_the_handlers_explain_header(server: Server) -> None:
    request = {"inputs": [{"name": "a", "datatype": "INT32", "shape": [2], "data": [1, 2]}]}
    status, reply = infer(server, "/v2/models/sums/versions/1.0/explain", request)
    assert status == 200
    assert json.loads(reply)["outputs"][0]["data"] == [-3]


def test_tensor_requests_share_a_batch_along_dim_0_and_are_split_back(server: Server) -> None:
    hold = Path(server.config["model_store"]) / "scale.hold"
    url = f"{server.inference}/v2/models/scale/infer"
    key = (("model_name", "scale"), ("model_version", "1.0"))

    def count(name: str) -> float:
        return metric_samples(server, name).get(key, 0.0)

    executions, inferences = count("serve_executions_total"), count("serve_inferences_total")
    sizes = [1, 2, 3]

    def request(rows: int, first: float) -> dict[str, Any]:
        data = [first + i for i in range(rows * 4)]
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": data}]}

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session:

            async def send(body: dict[str, Any]) -> Any:
                async with session.post(url, json=body) as reply:
                    assert reply.status == 200, await reply.text()
                    return await reply.json()

            hold.touch()
            try:
                holder = asyncio.create_task(send(request(1, 0)))
                await poll(lambda: count("serve_executions_total") > executions)
                burst = [asyncio.create_task(send(request(n, 100 * n))) for n in sizes]
                await poll(lambda: _pending(server, "scale") == len(sizes))
            finally:
                hold.unlink()
            await holder
            return await asyncio.gather(*burst)

    replies = asyncio.run(run())
    for rows, reply in zip(sizes, replies, strict=True):
        y, seen = reply["outputs"]
        assert y["shape"] == [rows, 4]
        assert y["data"] == [2 * (100 * rows + i) for i in range(rows * 4)]  # its own rows
        assert seen["data"] == [sum(sizes)] * rows  # one infer call saw all six rows
    assert count("serve_executions_total") - executions == 2
    assert count("serve_inferences_total") - inferences == 1 + sum(sizes)


def test_torchserve_handler_requests_share_a_batch_and_get_their_own_outputs(
    server: Server,
) -> None:
    hold = Path(server.config["model_store"]) / "sums.hold"
    url = f"{server.inference}/v2/models/sums/infer"
    key = (("model_name", "sums"), ("model_version", "1.0"))

    def executions() -> float:
        return metric_samples(server, "serve_executions_total").get(key, 0.0)

    before = executions()
    values = [1, 10, 100]

    def request(value: int) -> dict[str, Any]:
        return {
            "id": f"r{value}",
            "inputs": [
                {"name": "a", "datatype": "INT64", "shape": [1, 2], "data": [value, value]},
                {"name": "b", "datatype": "INT64", "shape": [1], "data": [value]},
            ],
        }

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session:

            async def send(body: dict[str, Any]) -> Any:
                async with session.post(url, json=body) as reply:
                    assert reply.status == 200, await reply.text()
                    return await reply.json()

            hold.touch()
            try:
                holder = asyncio.create_task(send(request(0)))
                await poll(lambda: executions() > before)
                burst = [asyncio.create_task(send(request(v))) for v in values]
                await poll(lambda: _pending(server, "sums") == len(values))
            finally:
                hold.unlink()
            await holder
            return await asyncio.gather(*burst)

    replies = asyncio.run(run())
    for value, reply in zip(values, replies, strict=True):
        assert reply["id"] == f"r{value}"
        assert [(o["name"], o["data"]) for o in reply["outputs"]] == [
            ("a", [2 * value]),
            ("b", [value]),
        ]
    assert executions() - before == 2  # the held request, then all three in one handler call


def _pending(server: Server, model: str) -> int:
    status, body = http("GET", f"{server.management}/models/{model}")
    assert status == 200
    return int(json.loads(body)[0]["jobQueueStatus"]["pendingRequests"])


X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v2/models/nope/infer", {"inputs": [X]}, 404, "nope"),
        ("/v2/models/ver/versions/9.9/infer", {"inputs": [X]}, 404, "9.9"),
        ("/v2/models/scale/infer", {"inputs": [X | {"shape": [1, 2, 2]}]}, 400, "input x: shape"),
        (
            "/v2/models/scale/infer",
            {"inputs": [X | {"datatype": "FP64"}]},
            400,
            "input x: datatype",
        ),
        ("/v2/models/scale/infer", {"inputs": [X | {"shape": [2, 4]}]}, 400, "input x: 4 data"),
        ("/v2/models/scale/infer", {"inputs": [X | {"name": "z"}]}, 400, "input z is not"),
        ("/v2/models/scale/infer", {"inputs": [X | {"datatype": "FP8"}]}, 400, "input x: datatype"),
        ("/v2/models/scale/infer", {"inputs": [X], "outputs": [{"name": "q"}]}, 400, "output q"),
        ("/v2/models/scale/infer", {"inputs": [X | {"data": ["a", 1, 2, 3]}]}, 400, "input x"),
        ("/v2/models/scale/infer", {"inputs": []}, 400, "inputs"),
        ("/v2/models/scale/infer", b"[1", 400, "JSON"),
        (
            "/v2/models/scale/infer",
            {"inputs": [X | {"data": [0] * 40000}]},
            413,
            "max_request_size",
        ),
        ("/v2/models/nope", None, 404, "nope"),
        ("/v2/models/ver/versions/9.9", None, 404, "9.9"),
        ("/v2/models/ver/versions/9.9/ready", None, 404, "9.9"),
    ],
)
def test_errors_name_what_is_wrong(
    server: Server, path: str, body: Any, status: int, words: str
) -> None:
    if body is None:
        got, reply = http("GET", server.inference + path)
    else:
        got, reply = infer(server, path, body)
    assert got == status, reply
    parsed = json.loads(reply)
    assert set(parsed) == {"error"}
    assert words in parsed["error"], parsed


def test_binary_size_that_does_not_fit_the_shape_names_the_input(server: Server) -> None:
    x = struct.pack("<3f", 1, 2, 3)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    ).encode()
    status, reply = infer(server, "/v2/models/scale/infer", head + x, {HEADER: str(len(head))})
    assert status == 400
    assert "input x: 12 bytes of data" in json.loads(reply)["error"]
    status, reply = infer(server, "/v2/models/scale/infer", head + x, {HEADER: "9999"})
    assert status == 400
    assert HEADER in json.loads(reply)["error"]


def test_tensor_inputs_with_different_row_counts_are_refused_by_name(server: Server) -> None:
    request = {
        "inputs": [
            {"name": "half", "datatype": "FP16", "shape": [1, 2], "data": [1, 2]},
            {"name": "flags", "datatype": "BOOL", "shape": [2, 2], "data": [True] * 4},
            {"name": "ints", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
            {"name": "words", "datatype": "BYTES", "shape": [1], "data": ["a"]},
        ]
    }
    status, body = infer_json(server, "kinds", request)
    assert status == 400
    assert body["error"].startswith("input flags has 2 rows"), body


def test_the_front_doors_never_import_torch() -> None:
    """DESIGN invariant 7: tensors cross the HTTP/gRPC layer as buffers; torch stays out."""
    code = (
        "import sys, serve.app, serve.http.oip, serve.http.kserve_v1, serve.grpc.oip, "
        "serve.models.tensors; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_event_loop_was_never_blocked(server: Server) -> None:
    lag = metric_samples(server, "serve_event_loop_lag_max_seconds")
    assert lag, "the server exports its loop lag"
    assert max(lag.values()) < MAX_LOOP_LAG


def test_a_tensor_handler_answering_the_wrong_rows_is_a_clear_503(server: Server) -> None:
    one = {"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}
    status, body = infer_json(server, "onerow", {"inputs": [one]})
    assert status == 200
    assert body["outputs"][0]["data"] == [1, 2]
    two = one | {"shape": [2, 1]}
    status, body = infer_json(server, "onerow", {"inputs": [two]})
    assert status == 503
    assert body == {"error": "number of batch response mismatched"}
    scalar = one | {"shape": [], "data": [5]}  # no declaration: the server cannot refuse it
    status, body = infer_json(server, "onerow", {"inputs": [scalar]})
    assert status == 503, body
