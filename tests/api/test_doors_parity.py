"""Every inference door is one path. The same call reaches the handler alike through each
door (inputs, client headers, request id), errors and deadlines behave alike, and KServe v1
and the Open Inference Protocol (REST and gRPC) get what /predictions gets: routing by the
model's traffic split (sticky by the routing key), shadow copies, the `X-Model-Version`
answer, and request deadlines; metadata and readiness ignore the split."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serve.routing.split import Split
from tests.helpers.clients import http, metric_samples, poll, run
from tests.helpers.grpc_stubs import failed_call
from tests.helpers.server import HandlerSpec, Server, ServerFactory

# "tagged" answers its version number for every entry; "echo" answers its inputs; "gated"
# records every entry in <store>/<model>.calls, then waits for <store>/<model>.gate.
DOOR = """
    import json
    import os
    import time

    VERSION = "{version}"
    MODE = "{mode}"

    def handle(data, context):
        if data is None:
            return None
        if MODE == "tagged":
            return [[float(VERSION)] for _ in data]
        if MODE == "gated":
            base = os.path.join(
                os.path.dirname(context.system_properties["model_dir"]), context.model_name
            )
            with open(base + ".calls", "a") as calls:
                calls.write("".join(json.dumps(row) + "\\n" for row in data))
            while not os.path.exists(base + ".gate"):  # the test opens the gate
                time.sleep(0.01)
        # an OIP input arrives as TorchServe's kservev2 envelope hands it (name, shape,
        # datatype, data); echo its data, as a TorchServe handler reads row["data"]
        return [row["data"] if isinstance(row, dict) and "datatype" in row else row for row in data]
"""

SPLIT = {"1.0": 75, "2.0": 25}
KEYS = [f"user-{i}" for i in range(40)]
ROUTING = "X-Routing-Key"


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[Server]:
    models = {
        f"{name}-{version}": HandlerSpec(
            DOOR.format(version=version, mode=mode), name=name, version=version
        )
        for name, version, mode in [
            ("ab", "1.0", "tagged"),
            ("ab", "2.0", "tagged"),
            ("mirror", "1.0", "echo"),
            ("mirror", "2.0", "echo"),
            ("gated", "1.0", "gated"),
        ]
    }
    server = make_module_server(
        models,
        models={
            "ab": {"*": {"batch_size": 8, "max_batch_delay": 5}, "traffic": SPLIT},
            "mirror": {"*": {"batch_size": 8, "max_batch_delay": 5}},
            "gated": {"1.0": {"batch_size": 1, "max_workers": 1}},
        },
    )
    yield server
    (server.store / "gated.gate").touch()  # let a held request finish so the server drains


def post(
    server: Server, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str | None, Any]:
    """POST JSON; the status, X-Model-Version and the JSON body."""

    async def one() -> tuple[int, str | None, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(server.inference + path, json=body, headers=headers) as response,
        ):
            return response.status, response.headers.get("X-Model-Version"), await response.json()

    return run(one())


def v2_body(value: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [value]}]}


def grpc_request(model: str, value: float, version: str = "") -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="x",
        datatype="FP32",
        shape=[1],
        contents=pb.InferTensorContents(fp32_contents=[value]),
    )
    return pb.ModelInferRequest(model_name=model, model_version=version, inputs=[tensor])


def _answer(response: Any) -> float:
    """The one value of a ModelInfer answer of the tagged model."""
    (raw,) = response.raw_output_contents
    datatype = response.outputs[0].datatype
    return float(np.frombuffer(raw, dtype="<f8" if datatype == "FP64" else "<f4")[0])


def test_v1_oip_rest_and_grpc_follow_the_split_by_routing_key(server: Server) -> None:
    local = Split.parse(SPLIT)
    wanted = {key: local.choose(key) for key in KEYS}
    assert set(wanted.values()) == {"1.0", "2.0"}  # the keys reach both versions
    with grpc.insecure_channel(server.grpc_inference) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for key, version in wanted.items():
            headers = {ROUTING: key}
            status, header, body = post(
                server, "/v1/models/ab:predict", {"instances": [1]}, headers
            )
            assert (status, header, body) == (200, version, {"predictions": [[float(version)]]})
            status, header, body = post(
                server, "/v1/models/ab:explain", {"instances": [1]}, headers
            )
            assert (status, header) == (200, version), body
            assert body == {"explanations": [[float(version)]]}

            for path in ("/v2/models/ab/infer", "/v2/models/ab/explain"):
                status, header, body = post(server, path, v2_body(0.5), headers)
                assert (status, header) == (200, version), body
                assert body["model_version"] == version
                assert body["outputs"][0]["data"] == [float(version)]

            reply, call = stub.ModelInfer.with_call(
                grpc_request("ab", 0.5), metadata=((ROUTING.lower(), key),)
            )
            assert (reply.model_version, _answer(reply)) == (version, float(version))
            assert dict(call.trailing_metadata())["x-model-version"] == version


def test_without_a_key_requests_spread_over_the_split(server: Server) -> None:
    seen = {post(server, "/v1/models/ab:predict", {"instances": [1]})[1] for _ in range(40)}
    seen |= {post(server, "/v2/models/ab/infer", v2_body(1))[1] for _ in range(40)}
    # 80 draws at 25%: both versions are seen but with probability 0.75**80 + 0.25**80 ~ 1e-10
    assert seen == {"1.0", "2.0"}


def test_a_named_version_wins_over_the_key_and_errors_name_the_version(server: Server) -> None:
    key = next(k for k in KEYS if Split.parse(SPLIT).choose(k) == "1.0")
    status, header, body = post(
        server, "/v2/models/ab/versions/2.0/infer", v2_body(1), {ROUTING: key}
    )
    assert (status, header, body["model_version"]) == (200, "2.0", "2.0")
    with grpc.insecure_channel(server.grpc_inference) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelInfer.with_call(
            grpc_request("ab", 1, "2.0"), metadata=((ROUTING.lower(), key),)
        )
        assert dict(call.trailing_metadata())["x-model-version"] == "2.0"
        # a bad request once the version is chosen: the error names it too
        bad = grpc_request("ab", 1)
        bad.inputs[0].shape[:] = [3]  # three elements declared, one given
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(bad, metadata=((ROUTING.lower(), key),))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(failed_call(raised.value).trailing_metadata())["x-model-version"] == "1.0"
    status, header, body = post(server, "/v1/models/ab:predict", {"instances": []}, {ROUTING: key})
    assert (status, header) == (400, "1.0")
    assert "instances" in body["error"]
    bad_shape = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1]}]}
    status, header, body = post(server, "/v2/models/ab/infer", bad_shape, {ROUTING: key})
    assert (status, header) == (400, "1.0")
    assert "x" in body["error"]
    zero = {"X-Request-Timeout": "0", ROUTING: key}
    status, header, body = post(server, "/v2/models/ab/infer", v2_body(1), zero)
    assert (status, header) == (400, "1.0")
    assert "X-Request-Timeout" in body["error"]


def test_metadata_and_readiness_describe_the_default_version(server: Server) -> None:
    m = server.management
    status, _ = http("PUT", f"{m}/models/ab/traffic", json.dumps({"1.0": 0, "2.0": 100}).encode())
    assert status == 200
    try:
        assert post(server, "/v2/models/ab/infer", v2_body(1))[1] == "2.0"  # all to 2.0 now
        for _ in range(10):
            status, raw = http("GET", f"{server.inference}/v2/models/ab/ready")
            assert (status, json.loads(raw)["version"]) == (200, "1.0")
            status, raw = http("GET", f"{server.inference}/v2/models/ab")
            assert (status, json.loads(raw)["versions"]) == (200, ["1.0", "2.0"])
            status, raw = http("GET", f"{server.inference}/v1/models/ab")
            assert (status, json.loads(raw)) == (200, {"name": "ab", "ready": True})
        with grpc.insecure_channel(server.grpc_inference) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name="ab")).ready
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="ab"))
            assert list(meta.versions) == ["1.0", "2.0"]
    finally:
        http("PUT", f"{m}/models/ab/traffic", json.dumps(SPLIT).encode())


def _shadow(server: Server, outcome: str) -> float:
    labels = (("model_name", "mirror"), ("model_version", "2.0"), ("outcome", outcome))
    return metric_samples(server, "serve_shadow_requests_total").get(labels, 0.0)


def _agreement(server: Server, result: str) -> float:
    labels = (("model_name", "mirror"), ("model_version", "2.0"), ("result", result))
    return metric_samples(server, "serve_shadow_agreement_total").get(labels, 0.0)


def test_shadows_get_a_true_copy_of_v1_and_oip_requests(server: Server) -> None:
    m = server.management
    split = json.dumps({"1.0": 100, "shadow": {"2.0": 100}}).encode()
    assert http("PUT", f"{m}/models/mirror/traffic", split)[0] == 200
    try:
        ok, equal = _shadow(server, "ok"), _agreement(server, "equal")
        status, header, body = post(server, "/v1/models/mirror:predict", {"instances": [{"a": 1}]})
        assert (status, header, body) == (200, "1.0", {"predictions": [{"a": 1}]})
        status, header, body = post(server, "/v2/models/mirror/infer", v2_body(3))
        assert (status, header, body["outputs"][0]["data"]) == (200, "1.0", [3.0])
        with grpc.insecure_channel(server.grpc_inference) as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request("mirror", 4))
            assert reply.model_version == "1.0"
        # each copy ran on 2.0 with the request's own inputs: it answered as the primary did
        run(poll(lambda: _agreement(server, "equal") == equal + 3))
        assert _shadow(server, "ok") == ok + 3
        assert _shadow(server, "error") == 0
        assert _agreement(server, "different") == 0
        # a copy is not a client request of 2.0
        requests = metric_samples(server, "serve_requests_total")
        mine = (("model_name", "mirror"), ("model_version", "2.0"))
        assert sum(v for k, v in requests.items() if set(mine) <= set(k)) == 0
    finally:
        assert http("DELETE", f"{m}/models/mirror/traffic")[0] == 200


class Gated:
    """The gated model: what its handler saw, and its gate."""

    def __init__(self, server: Server) -> None:
        store = Path(server.config["model_store"])
        self.calls_file = store / "gated.calls"
        self.gate = store / "gated.gate"
        self.calls_file.unlink(missing_ok=True)
        self.gate.unlink(missing_ok=True)

    def calls(self) -> list[Any]:
        text = self.calls_file.read_text() if self.calls_file.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


def _passed_queued(server: Server) -> float:
    labels = (("model_name", "gated"), ("model_version", "1.0"), ("stage", "queued"))
    return metric_samples(server, "serve_deadline_exceeded_total").get(labels, 0.0)


def test_queued_v1_and_oip_requests_past_their_deadline_get_504_and_never_run(
    server: Server,
) -> None:
    model = Gated(server)
    before = _passed_queued(server)
    base = server.inference

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def send(path: str, body: Any, ms: str | None = None) -> tuple[int, Any, Any]:
                headers = {} if ms is None else {"X-Request-Timeout": ms}
                async with session.post(base + path, json=body, headers=headers) as response:
                    version = response.headers.get("X-Model-Version")
                    return response.status, version, await response.json()

            first = asyncio.create_task(send("/v1/models/gated:predict", {"instances": ["first"]}))
            await poll(lambda: model.calls() == ["first"])  # the only executor is held
            sent = time.monotonic()
            status, version, body = await send(
                "/v1/models/gated:predict", {"instances": ["late"]}, "300"
            )
            assert (status, version) == (504, "1.0"), body
            assert "300 ms (the X-Request-Timeout header)" in body["error"]
            assert "queued" in body["error"]
            assert time.monotonic() - sent >= 0.3
            status, version, body = await send("/v2/models/gated/infer", v2_body(7), "300")
            assert (status, version) == (504, "1.0"), body
            assert "queued" in body["error"]

            def late_grpc() -> grpc.StatusCode:
                with grpc.insecure_channel(server.grpc_inference) as channel:
                    stub = pb_grpc.GRPCInferenceServiceStub(channel)
                    with pytest.raises(grpc.RpcError) as raised:
                        stub.ModelInfer(grpc_request("gated", 8), timeout=0.5)
                    return raised.value.code()

            assert await asyncio.to_thread(late_grpc) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert not model.gate.exists()  # all answered while the gate was shut
            model.gate.touch()
            assert (await first)[0] == 200
            # FIFO: had the late ones stayed queued, they would have run before this one
            status, _, _ = await send("/v1/models/gated:predict", {"instances": ["after"]})
            assert status == 200

    run(main())
    assert model.calls() == ["first", "after"], "an expired request reached the handler"
    run(poll(lambda: _passed_queued(server) >= before + 3))


def test_openapi_declares_the_timeout_and_routing_headers_on_the_new_inference_paths(
    server: Server,
) -> None:
    status, raw = http("GET", f"{server.inference}/api-description")
    assert status == 200
    paths = json.loads(raw)["paths"]

    def headers(path: str) -> set[str]:
        params = paths[path]["post"]["parameters"]
        return {p["name"] for p in params if p["in"] == "header"}

    both = {"X-Request-Timeout", "X-Routing-Key"}
    for path in (
        "/predictions/{model_name}",
        "/v1/models/{model_name}:predict",
        "/v1/models/{model_name}:explain",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/explain",
    ):
        assert headers(path) == both, path
        assert "504" in paths[path]["post"]["responses"], path
    for path in (
        "/predictions/{model_name}/{model_version}",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "/v2/models/{model_name}/versions/{model_version}/explain",
    ):
        assert headers(path) == {"X-Request-Timeout"}, path  # a named version is not routed


# --- the same call through every inference door --------------------------------------------

# Records what it saw of each entry (its value, request id and headers) in
# <store>/witness.seen; 13 fails in the handler, 99 takes longer than the tests' deadline.
WITNESS = """
    import json
    import os
    import time

    def _value(row):
        if isinstance(row, dict):
            row = row.get("body", row.get("data"))
        if isinstance(row, (bytes, bytearray)):
            row = row.decode()
        if isinstance(row, list):
            (row,) = row
        return float(row)

    def handle(data, context):
        if data is None:
            return None
        seen = os.path.join(os.path.dirname(context.system_properties["model_dir"]), "witness")
        out = []
        for idx, row in enumerate(data):
            value = _value(row)
            headers = context.get_all_request_header(idx)
            with open(seen + ".seen", "a") as f:
                f.write(json.dumps({
                    "value": value,
                    "request_id": context.get_request_id(idx),
                    "x-parity": headers.get("x-parity"),
                    "explain": headers.get("explain"),
                    "url_path": headers.get("url_path"),
                }) + "\\n")
            if value == 13:
                raise ValueError("unlucky thirteen")
            if value == 99:
                time.sleep(0.6)
            is_ts = isinstance(row, dict) and "body" in row
            out.append("ok" if is_ts else row)
        return out
"""


@pytest.fixture(scope="module")
def witness(make_module_server: ServerFactory) -> Server:
    return make_module_server(
        {"witness": HandlerSpec(WITNESS, name="witness", version="1.0")},
        models={"witness": {"1.0": {"batch_size": 1, "max_workers": 1}}},
    )


def _seen(server: Server) -> list[dict[str, Any]]:
    path = server.store / "witness.seen"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


REST_DOORS = {
    "predictions": ("/predictions/witness", "ts"),
    "invocations": ("/invocations?model_name=witness", "ts"),
    "invoke": ("/models/witness/invoke", "ts"),
    "legacy": ("/witness/predict", "ts"),
    "kserve v1": ("/v1/models/witness:predict", "v1"),
    "oip rest": ("/v2/models/witness/infer", "v2"),
}
GRPC_DOORS = ("Predictions", "StreamPredictions", "StreamPredictions2", "ModelInfer")


def _rest(
    server: Server, path: str, shape: str, value: float, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    body: Any = {"ts": str(value), "v1": {"instances": [value]}, "v2": v2_body(value)}[shape]

    async def one() -> tuple[int, dict[str, str], Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(
                server.inference + path,
                data=body if shape == "ts" else None,
                json=None if shape == "ts" else body,
                headers=headers,
            ) as response,
        ):
            raw = await response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}, raw

    status, got, raw = run(one())
    try:
        return status, got, json.loads(raw)
    except ValueError:
        return status, got, raw.decode()


def _grpc(
    server: Server, door: str, value: float, metadata: tuple[tuple[str, str], ...], **kw: Any
) -> tuple[Any, dict[str, str]]:
    """The reply of one gRPC door and its trailing metadata; raises grpc.RpcError."""
    from tests.helpers.grpc_stubs import grpcio_stubs

    with grpc.insecure_channel(server.grpc_inference) as channel:
        if door == "ModelInfer":
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply, call = stub.ModelInfer.with_call(
                grpc_request("witness", value), metadata=metadata, **kw
            )
            return reply, dict(call.trailing_metadata())
        ts = _TS_STUBS.setdefault("pb", grpcio_stubs(Path(server.config["model_store"]).parent))
        inference = ts["inference_pb2"]
        request = inference.PredictionsRequest(
            model_name="witness", input={"body": str(value).encode()}
        )
        ts_stub = ts["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
        if door == "Predictions":
            reply, call = ts_stub.Predictions.with_call(request, metadata=metadata, **kw)
            return reply, dict(call.trailing_metadata())
        if door == "StreamPredictions":
            call = ts_stub.StreamPredictions(request, metadata=metadata, **kw)
            replies = list(call)
            return replies[-1], dict(call.trailing_metadata())
        call = ts_stub.StreamPredictions2(iter([request]), metadata=metadata, **kw)
        (reply,) = list(call)
        return reply, dict(call.trailing_metadata())


_TS_STUBS: dict[str, Any] = {}


def test_every_door_hands_the_handler_the_same_call(witness: Server) -> None:
    """Same value, same client header, the client's request id, and the same flags."""
    _seen(witness)
    expected = {"value": 7.0, "x-parity": "same", "explain": "False", "url_path": ""}
    for door, (path, shape) in REST_DOORS.items():
        rid = f"rest-{door.replace(' ', '-')}"
        headers = {"x-parity": "same", "x-request-id": rid}
        status, got, body = _rest(witness, path, shape, 7, headers)
        assert status == 200, (door, body)
        assert (got["x-model-version"], got["x-request-id"]) == ("1.0", rid), door
        (seen,) = _seen(witness)
        assert seen == {**expected, "request_id": rid}, door
    for door in GRPC_DOORS:
        rid = f"grpc-{door}"
        _, trailers = _grpc(witness, door, 7, (("x-parity", "same"), ("x-request-id", rid)))
        if door != "StreamPredictions2":  # its requests may name different models
            assert trailers["x-model-version"] == "1.0", door
        (seen,) = _seen(witness)
        assert seen == {**expected, "request_id": rid}, door


def test_without_a_client_id_each_door_makes_one_and_the_handler_sees_it(
    witness: Server,
) -> None:
    _seen(witness)
    for door, (path, shape) in REST_DOORS.items():
        status, got, _ = _rest(witness, path, shape, 7, {"x-request-id": "has space"})
        assert status == 200, door
        (seen,) = _seen(witness)
        assert seen["request_id"] == got["x-request-id"] != "has space", door
    ids = set()
    for door in GRPC_DOORS:
        _grpc(witness, door, 7, ())
        (seen,) = _seen(witness)
        assert seen["request_id"], door
        ids.add(seen["request_id"])
    assert len(ids) == len(GRPC_DOORS)  # a fresh id per call


def test_an_error_in_the_handler_names_the_version_on_every_door(witness: Server) -> None:
    messages = set()
    for door, (path, shape) in REST_DOORS.items():
        status, got, body = _rest(witness, path, shape, 13, {})
        assert status >= 500, (door, body)
        assert got["x-model-version"] == "1.0", door
        # TorchServe's paths answer {"code", "type", "message"}, KServe's {"error"}
        messages.add(body["message"] if shape == "ts" else body["error"])
    grpc_messages = set()
    for door in ("Predictions", "StreamPredictions", "ModelInfer"):
        with pytest.raises(grpc.RpcError) as raised:
            _grpc(witness, door, 13, ())
        assert raised.value.code() != grpc.StatusCode.OK
        assert dict(failed_call(raised.value).trailing_metadata())["x-model-version"] == "1.0", door
        grpc_messages.add(raised.value.details())
    reply, _ = _grpc(witness, "StreamPredictions2", 13, ())
    assert reply.status.code != 0  # answered in band, so the stream goes on
    grpc_messages.add(reply.status.message)
    assert len(messages) == 1, messages  # the same error, whatever the door
    assert grpc_messages == messages
    _seen(witness)


def test_a_deadline_bounds_the_call_the_same_way_on_every_door(witness: Server) -> None:
    for door, (path, shape) in REST_DOORS.items():
        status, got, body = _rest(witness, path, shape, 99, {"X-Request-Timeout": "200"})
        assert (status, got["x-model-version"]) == (504, "1.0"), (door, body)
        message = body["message"] if shape == "ts" else body["error"]
        assert "200 ms (the X-Request-Timeout header)" in message, door
        status, got, body = _rest(witness, path, shape, 7, {"X-Request-Timeout": "0"})
        assert (status, got["x-model-version"]) == (400, "1.0"), (door, body)
        message = body["message"] if shape == "ts" else body["error"]
        assert "X-Request-Timeout" in message, door
    for door in GRPC_DOORS:
        if door == "StreamPredictions2":
            reply, _ = _grpc(witness, door, 99, (), timeout=0.2)
            assert reply.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], door
            continue
        with pytest.raises(grpc.RpcError) as raised:
            _grpc(witness, door, 99, (), timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, door
    _seen(witness)
