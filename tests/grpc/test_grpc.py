"""The gRPC APIs end to end, through grpcio stubs generated from proto/ (what TorchServe users
have) and through the betterproto2/grpclib client the project generates."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.config import Address, Config, ConfigError
from serve.grpc.fastproto import FastPredictionsRequest
from serve.grpc.fastproto import inputs as fast_inputs
from serve.grpc.gen.org.pytorch.serve.grpc import inference as bp
from serve.grpc.server import start_grpc
from serve.grpc.transport import prediction_bytes
from serve.models.registry import Registry
from serve.telemetry.metrics import ServerMetrics
from serve.workers.intraop import ThreadBudget
from tests.helpers.clients import http, metric_samples, wait_until
from tests.helpers.grpc_stubs import LOADED, MODELS, build_store, failed_call, grpcio_stubs
from tests.helpers.server import Server, ServerFactory, assert_loop_lag

# what an unknown model gets while the startup models alone are registered
NOPE = f"Model not found: nope (registered: {', '.join(sorted(LOADED))})"


def _start(make: ServerFactory, root: Path, *, load: list[str], **config: Any) -> Server:
    """A server in `root` serving the gRPC test store (tests/helpers/grpc_stubs.py)."""
    store = root / "store"
    store.mkdir()
    build_store(store)
    return make(root=root, store=store, load=load, **config)


@pytest.fixture(scope="module")
def grpc_server(
    make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """A server with the model API on, the test models loaded and `spare` in its store."""
    return _start(
        make_module_server,
        tmp_path_factory.mktemp("grpc"),
        load=LOADED,
        enable_model_api=True,
        models=MODELS,
    )


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """grpcio stubs generated from our protos."""
    return grpcio_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="module")
def infer(grpc_server: Server, pb: dict[str, ModuleType]) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_server.grpc_inference) as channel:
        yield pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)


@pytest.fixture(scope="module")
def manage(grpc_server: Server, pb: dict[str, ModuleType]) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_server.grpc_management) as channel:
        yield pb["management_pb2_grpc"].ManagementAPIsServiceStub(channel)


@pytest.fixture(autouse=True)
def grpc_loop_guard(grpc_server: Server) -> Iterator[None]:
    """Fail a test if the server's event loop was blocked while it ran."""
    yield
    assert_loop_lag(grpc_server)


def _request(pb: dict[str, ModuleType], model: str, **inputs: bytes) -> Any:
    return pb["inference_pb2"].PredictionsRequest(model_name=model, input=inputs)


def _fails(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    failed = failed_call(info.value)
    return failed.code(), failed.details()


def _post_raw(url: str, body: bytes) -> bytes:
    """A REST prediction with a raw body (urllib would send it as a form)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()  # type: ignore[no-any-return]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- inference ---------------------------------------------------------------------------


def test_ping_answers_torchserve_health_json(infer: Any, pb: dict[str, ModuleType]) -> None:
    empty = pb["inference_pb2"].google_dot_protobuf_dot_empty__pb2.Empty()
    assert json.loads(infer.Ping(empty).health) == {"status": "Healthy"}


def test_each_input_entry_reaches_the_handler_as_a_bytearray(
    infer: Any, pb: dict[str, ModuleType]
) -> None:
    reply = infer.Predictions(_request(pb, "echo", data=b'{"a": 1}', extra=b"x"))
    seen = json.loads(reply.prediction)
    assert seen["keys"] == ["data", "extra"]
    assert seen["type"] == "bytearray"  # no content type on gRPC: never JSON-decoded
    assert seen["input"] == '{"a": 1}'
    assert seen["batch"] == 1
    versioned = pb["inference_pb2"].PredictionsRequest(
        model_name="echo", model_version="1.0", input={"data": b"v"}
    )
    assert json.loads(infer.Predictions(versioned).prediction)["input"] == "v"


def test_concurrent_calls_are_batched_each_with_its_own_answer(grpc_server: Server) -> None:
    key = (("model_name", "echo"), ("model_version", "1.0"))
    before = metric_samples(grpc_server, "serve_executions_total").get(key, 0.0)
    count = 32

    async def main() -> list[bp.PredictionResponse]:
        async with Channel(*_host_port(grpc_server.grpc_inference)) as channel:
            stub = bp.InferenceApIsServiceStub(channel)
            return await asyncio.gather(
                *(
                    stub.predictions(
                        bp.PredictionsRequest(model_name="echo", input={"data": str(i).encode()})
                    )
                    for i in range(count)
                )
            )

    replies = asyncio.run(main())
    seen = [json.loads(reply.prediction) for reply in replies]
    assert [s["input"] for s in seen] == [str(i) for i in range(count)]
    assert len({s["request_id"] for s in seen}) == count
    assert max(s["batch"] for s in seen) > 1, "concurrent calls should have been batched"
    assert max(s["batch"] for s in seen) <= 8, "a batch never exceeds batch_size"
    after = metric_samples(grpc_server, "serve_executions_total")[key]
    assert after - before < count, "fewer executions than requests"


def test_grpc_and_rest_answer_the_same_bytes(
    grpc_server: Server, infer: Any, pb: dict[str, ModuleType]
) -> None:
    for text in (b"hello", b'{"json": true}', "h\u00e9".encode()):
        grpc_body = infer.Predictions(_request(pb, "kinds", body=text)).prediction
        rest_body = _post_raw(grpc_server.inference + "/predictions/kinds", text)
        assert grpc_body == rest_body
        assert json.loads(grpc_body)["type"] == "bytearray"
    streamed = [r.prediction for r in infer.StreamPredictions(_request(pb, "streaming", body=b"s"))]
    rest_body = _post_raw(grpc_server.inference + "/predictions/streaming", b"s")
    assert b"".join(streamed) == rest_body
    # a unary call to a streaming handler gets the whole answer, like REST's chunked body
    assert infer.Predictions(_request(pb, "streaming", body=b"s")).prediction == rest_body


def test_stream_predictions_relays_intermediate_responses(
    grpc_server: Server, infer: Any, pb: dict[str, ModuleType]
) -> None:
    replies = list(infer.StreamPredictions(_request(pb, "streaming", body=b"go")))
    assert [r.prediction for r in replies] == [b"chunk0;", b"chunk1;", b"chunk2;", b"done"]

    async def main() -> list[bytes]:
        async with Channel(*_host_port(grpc_server.grpc_inference)) as channel:
            stub = bp.InferenceApIsServiceStub(channel)
            request = bp.PredictionsRequest(model_name="streaming", input={"body": b"go"})
            chunks = [r.prediction async for r in stub.stream_predictions(request)]
            with pytest.raises(GRPCError) as info:
                await stub.predictions(bp.PredictionsRequest(model_name="nope", input={"a": b""}))
            assert (info.value.status, info.value.message) == (
                Status.NOT_FOUND,
                NOPE,
            )
            return chunks

    assert asyncio.run(main()) == [b"chunk0;", b"chunk1;", b"chunk2;", b"done"]


def test_a_stream_broken_after_its_first_chunk_ends_with_the_error(
    infer: Any, pb: dict[str, ModuleType]
) -> None:
    replies = infer.StreamPredictions(_request(pb, "breaking", body=b"x"))
    assert next(replies).prediction == b"partial"
    assert _fails(next, replies) == (grpc.StatusCode.UNAVAILABLE, "Prediction failed")
    code, _ = _fails(infer.Predictions, _request(pb, "breaking", body=b"x"))
    assert code == grpc.StatusCode.UNAVAILABLE
    request = pb["inference_pb2"].PredictionsRequest(
        model_name="breaking", input={"body": b"x"}, sequence_id="b"
    )
    replies = list(infer.StreamPredictions2(iter([request, request])))
    assert [(r.prediction, r.status.message) for r in replies] == [
        (b"partial", ""),
        (b"", "Prediction failed"),
    ] * 2


def test_errors_become_grpc_statuses_with_the_message(
    infer: Any, pb: dict[str, ModuleType]
) -> None:
    def predict(model: str, version: str = "", **inputs: bytes) -> tuple[grpc.StatusCode, str]:
        request = pb["inference_pb2"].PredictionsRequest(
            model_name=model, model_version=version, input=inputs
        )
        return _fails(infer.Predictions, request)

    assert predict("nope", data=b"x") == (grpc.StatusCode.NOT_FOUND, NOPE)
    assert predict("echo", "9.9", data=b"x") == (
        grpc.StatusCode.NOT_FOUND,
        "Model version: 9.9 does not exist for model: echo",
    )
    assert predict("", data=b"x") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Parameter model_name is required.",
    )
    assert predict("echo") == (grpc.StatusCode.INVALID_ARGUMENT, "Parameter input is required.")
    assert predict("failing", body=b"boom") == (grpc.StatusCode.UNAVAILABLE, "Prediction failed")
    assert predict("failing", body=b"custom") == (
        grpc.StatusCode.FAILED_PRECONDITION,  # PredictionException(..., 418)
        "custom failure",
    )
    assert predict("failing", body=b"oom") == (grpc.StatusCode.INTERNAL, "Out of resources")
    code, _ = _fails(lambda r: list(infer.StreamPredictions(r)), _request(pb, "nope", body=b"x"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_stream_predictions2_answers_each_request_in_order(
    infer: Any, pb: dict[str, ModuleType]
) -> None:
    def request(model: str, body: bytes, seq: str) -> Any:
        return pb["inference_pb2"].PredictionsRequest(
            model_name=model, input={"body": body}, sequence_id=seq
        )

    requests = [
        request("kinds", b"first", "s1"),
        request("failing", b"boom", "s2"),
        request("nope", b"x", "s3"),
        request("streaming", b"go", "s4"),
        request("kinds", b"last", "s5"),
    ]
    replies = list(infer.StreamPredictions2(iter(requests)))
    answers = [
        (
            r.sequence_id,
            r.status.code if r.HasField("status") else None,
            r.status.message if r.HasField("status") else json_or_bytes(r.prediction),
        )
        for r in replies
    ]
    assert answers == [
        ("s1", None, {"type": "bytearray", "text": "first"}),
        ("s2", grpc.StatusCode.UNAVAILABLE.value[0], "Prediction failed"),
        ("s3", grpc.StatusCode.NOT_FOUND.value[0], NOPE),
        ("s4", None, b"chunk0;"),
        ("s4", None, b"chunk1;"),
        ("s4", None, b"chunk2;"),
        ("s4", None, b"done"),
        ("s5", None, {"type": "bytearray", "text": "last"}),
    ]


def json_or_bytes(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def test_stream_predictions2_through_the_grpclib_client(grpc_server: Server) -> None:
    async def main() -> list[bp.PredictionResponse]:
        async with Channel(*_host_port(grpc_server.grpc_inference)) as channel:
            stub = bp.InferenceApIsServiceStub(channel)
            requests = [
                bp.PredictionsRequest(model_name="echo", input={"data": str(i).encode()})
                for i in range(6)
            ]
            return [r async for r in stub.stream_predictions_2(requests)]

    replies = asyncio.run(main())
    assert [json.loads(r.prediction)["input"] for r in replies] == [str(i) for i in range(6)]
    assert all(r.sequence_id is None and r.status is None for r in replies)


# --- management --------------------------------------------------------------------------


def test_list_and_describe_return_rest_json(grpc_server: Server, manage: Any, pb: Any) -> None:
    m = pb["management_pb2"]
    listed = manage.ListModels(m.ListModelsRequest()).msg
    status, body = http("GET", grpc_server.management + "/models")
    assert status == 200
    assert body == (listed + "\n").encode()
    assert [x["modelName"] for x in json.loads(listed)["models"]] == sorted(LOADED)
    page = json.loads(manage.ListModels(m.ListModelsRequest(limit=2, next_page_token=1)).msg)
    assert page == {
        "nextPageToken": "3",
        "models": [{"modelName": n, "modelUrl": n} for n in sorted(LOADED)[1:3]],
    }
    described = json.loads(manage.DescribeModel(m.DescribeModelRequest(model_name="echo")).msg)
    status, body = http("GET", grpc_server.management + "/models/echo")
    assert status == 200
    assert _stable(described) == _stable(json.loads(body))
    assert described[0]["batchSize"] == 8
    every = m.DescribeModelRequest(model_name="echo", model_version="all")
    assert len(json.loads(manage.DescribeModel(every).msg)) == 1
    code, message = _fails(manage.DescribeModel, m.DescribeModelRequest(model_name="nope"))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, NOPE)
    code, _ = _fails(manage.DescribeModel, m.DescribeModelRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _fails(manage.ListModels, m.ListModelsRequest(next_page_token=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def _stable(described: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A describe body without the figures that change between two calls."""
    for body in described:
        for worker in body["workers"]:
            worker.pop("memoryUsage")
    return described


def test_scale_workers(manage: Any, pb: Any) -> None:
    m = pb["management_pb2"]

    def workers() -> int:
        body = manage.DescribeModel(m.DescribeModelRequest(model_name="kinds")).msg
        return len(json.loads(body)[0]["workers"])

    scale = m.ScaleWorkerRequest
    reply = manage.ScaleWorker(scale(model_name="kinds", min_worker=2, synchronous=True))
    assert reply.msg == "Workers scaled to 2 for model: kinds"
    assert workers() == 2
    reply = manage.ScaleWorker(
        scale(model_name="kinds", model_version="1.0", min_worker=1, synchronous=True)
    )
    assert reply.msg == "Workers scaled to 1 for model: kinds, version: 1.0"
    assert workers() == 1
    assert manage.ScaleWorker(scale(model_name="kinds")).msg == "Processing worker updates..."
    assert _fails(manage.ScaleWorker, scale(model_name="kinds", min_worker=3, max_worker=2)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_worker cannot be less than min_worker.",
    )
    assert _fails(manage.ScaleWorker, scale(model_name="kinds", min_worker=-1)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Parameter min_worker must be at least 0 (from 0 to 256), got -1",
    )
    code, _ = _fails(manage.ScaleWorker, scale(model_name="nope"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_register_set_default_and_unregister(
    grpc_server: Server, manage: Any, infer: Any, pb: Any
) -> None:
    m = pb["management_pb2"]
    register = m.RegisterModelRequest
    reply = manage.RegisterModel(register(url="spare", initial_workers=1, synchronous=True))
    assert reply.msg == 'Model "spare" Version: 1.0 registered with 1 initial workers'
    assert _fails(manage.RegisterModel, register(url="spare", synchronous=True)) == (
        grpc.StatusCode.ABORTED,
        "Model version 1.0 is already registered for model spare",
    )
    reply = manage.RegisterModel(register(url="spare-v2", initial_workers=1, batch_size=4))
    assert reply.msg == "Processing worker updates..."  # synchronous is false when not set
    _wait_ready(grpc_server, "spare/2.0")
    v2 = json.loads(
        manage.DescribeModel(m.DescribeModelRequest(model_name="spare", model_version="2.0")).msg
    )
    assert v2[0]["batchSize"] == 4

    def predict() -> Any:
        return json.loads(infer.Predictions(_request(pb, "spare", body=b"x")).prediction)

    assert predict() == {"version": "1.0"}
    reply = manage.SetDefault(m.SetDefaultRequest(model_name="spare", model_version="2.0"))
    assert reply.msg == 'Default version successfully updated for model "spare" to "2.0"'
    assert predict() == {"version": "2.0"}
    assert _fails(
        manage.SetDefault, m.SetDefaultRequest(model_name="spare", model_version="7")
    ) == (
        grpc.StatusCode.NOT_FOUND,
        "Model version: 7 does not exist for model: spare",
    )
    code, _ = _fails(manage.SetDefault, m.SetDefaultRequest(model_name="spare"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    unregister = m.UnregisterModelRequest
    assert _fails(manage.UnregisterModel, unregister(model_name="spare")) == (
        grpc.StatusCode.PERMISSION_DENIED,  # 403: the default version while others exist
        "Cannot remove default version for model spare",
    )
    reply = manage.UnregisterModel(unregister(model_name="spare", model_version="1.0"))
    assert reply.msg == 'Model "spare" unregistered'
    assert (
        manage.UnregisterModel(unregister(model_name="spare")).msg == 'Model "spare" unregistered'
    )
    code, _ = _fails(manage.UnregisterModel, unregister(model_name="spare"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = _fails(infer.Predictions, _request(pb, "spare", body=b"x"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_register_refuses_bad_parameters(manage: Any, pb: Any) -> None:
    register = pb["management_pb2"].RegisterModelRequest
    assert _fails(manage.RegisterModel, register()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Parameter url is required.",
    )
    code, message = _fails(manage.RegisterModel, register(url="missing.mar"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message.startswith("Model not found at: missing.mar (looked in the model store ")
    assert _fails(manage.RegisterModel, register(url="../etc")) == (
        grpc.StatusCode.NOT_FOUND,
        "Relative path is not allowed in url: ../etc",
    )
    code, _ = _fails(manage.RegisterModel, register(url="spare", runtime="LSP"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = _fails(manage.RegisterModel, register(url="spare", batch_size=-2))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def _wait_ready(server: Server, model: str, timeout: float = 30.0) -> None:
    wait_until(lambda: http("GET", f"{server.inference}/ready/{model}")[0] == 200, timeout)


# --- the servers themselves ----------------------------------------------------------------


def test_servers_bind_port_zero_and_a_taken_port_is_a_config_error() -> None:
    zero = Address("127.0.0.1", 0)
    config = Config(grpc_inference_address=zero, grpc_management_address=zero)

    async def main() -> None:
        registry = Registry(config, gpu_count=0, budget=ThreadBudget(1), metrics=ServerMetrics())
        try:
            async with AsyncExitStack() as stack:
                bound = dict((await start_grpc(stack, config, registry, grace=1.0))[0])
                ports = {address.port for address in bound.values()}
                assert len(ports) == 2
                assert 0 not in ports
                inference = bound["gRPC Inference API"]
                async with Channel(inference.host, inference.port) as channel:
                    health = await bp.InferenceApIsServiceStub(channel).ping()
                assert json.loads(health.health) == {"status": "Healthy"}
                taken = Config(grpc_inference_address=inference, grpc_management_address=zero)
                with pytest.raises(
                    ConfigError, match=r"grpc_inference_address: .* is already in use"
                ):
                    async with AsyncExitStack() as other:
                        await start_grpc(other, taken, registry, grace=1.0)
        finally:
            await registry.close()

    asyncio.run(main())


# --- a server with the model API off, a small message limit, and its shutdown --------------


def test_locked_server_refuses_the_model_api_and_big_messages_then_drains_on_sigterm(
    make_server: ServerFactory, tmp_path: Path, pb: dict[str, ModuleType]
) -> None:
    server = _start(make_server, tmp_path, load=["gated"], max_request_size=4096)
    gate = tmp_path / "store" / "gated.gate"
    try:
        m, i = pb["management_pb2"], pb["inference_pb2"]
        with (
            grpc.insecure_channel(server.grpc_management) as management,
            grpc.insecure_channel(server.grpc_inference) as inference,
        ):
            manage = pb["management_pb2_grpc"].ManagementAPIsServiceStub(management)
            infer = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(inference)
            code, message = _fails(manage.RegisterModel, m.RegisterModelRequest(url="spare"))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "--enable-model-api" in message
            code, _ = _fails(manage.UnregisterModel, m.UnregisterModelRequest(model_name="gated"))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert json.loads(manage.ListModels(m.ListModelsRequest()).msg)["models"]
            big = _request(pb, "gated", body=b"x" * 5000)
            code, message = _fails(infer.Predictions, big)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_request_size (4096 bytes)" in message

            # SIGTERM while a call is inside the handler: the server refuses new calls,
            # answers the running one, then exits cleanly.
            running = infer.Predictions.future(_request(pb, "gated", body=b"x"))
            _wait_for_inflight(server)
            queued = _request(pb, "gated", body=b"late")
            code, _ = _fails(lambda r: infer.Predictions(r, timeout=0.2), queued)
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            empty = i.google_dot_protobuf_dot_empty__pb2.Empty()
            _wait_until_refused(infer, empty)
            gate.touch()
            assert running.result(timeout=30).prediction == b"1"
        assert server.wait() == 0, server.log()
    finally:
        gate.touch()
        server.stop()


def _wait_for_inflight(server: Server, timeout: float = 30.0) -> None:
    key = (("model_name", "gated"), ("model_version", "1.0"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric_samples(server, "serve_inferences_total").get(key, 0.0) >= 1:
            return
        time.sleep(0.02)  # polling an endpoint for state, not synchronising on time
    raise AssertionError("the call never reached the handler")


def _wait_until_refused(infer: Any, empty: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            infer.Ping(empty)
        except grpc.RpcError as error:
            code = error.code()
            break
        time.sleep(0.02)  # polling an endpoint for state, not synchronising on time
    else:
        raise AssertionError("the server kept accepting calls after SIGTERM")
    assert code == grpc.StatusCode.UNAVAILABLE


# --- the unary predict RPCs' request parser (upb) and answer encoder -----------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    model=_names,
    version=_names,
    inputs=st.dictionaries(_names, st.binary(max_size=40), max_size=5),
    sequence_id=st.none() | _names,
)
def test_the_upb_request_reads_what_the_generated_class_writes(
    model: str, version: str, inputs: dict[str, bytes], sequence_id: str | None
) -> None:
    wire = bytes(
        bp.PredictionsRequest(
            model_name=model, model_version=version, input=inputs, sequence_id=sequence_id
        )
    )
    fast = FastPredictionsRequest.FromString(wire)
    assert (fast.model_name, fast.model_version) == (model, version)
    assert list(fast_inputs(fast).items()) == list(inputs.items())  # the client's order kept
    assert fast.sequence_id == (sequence_id or "")
    assert prediction_bytes(b"".join(inputs.values())) == bytes(
        bp.PredictionResponse(prediction=b"".join(inputs.values()))
    )


def test_a_malformed_predict_request_is_invalid_argument(grpc_server: Server) -> None:
    async def main() -> GRPCError:
        async with Channel(*_host_port(grpc_server.grpc_inference)) as channel:
            path = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
            async with channel.request(path, Cardinality.UNARY_UNARY, _Raw, _Raw) as stream:
                await stream.send_message(_Raw(b"\x0a\xff\xff"), end=True)  # a truncated field
                with pytest.raises(GRPCError) as info:
                    await stream.recv_message()
                return info.value

    error = asyncio.run(main())
    assert error.status is Status.INVALID_ARGUMENT
    assert "Malformed request message" in (error.message or "")


class _Raw:
    """Bytes sent and received as they are (grpclib's proto codec calls these two)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> _Raw:
        return cls(data)


def test_an_answer_larger_than_one_frame_arrives_whole(grpc_server: Server) -> None:
    # grpclib's client keeps h2's 16 KiB frames: the answer goes through grpclib's own send
    # path, in several frames, and keeps its trailing metadata
    text = "x" * 100_000

    async def main() -> tuple[bp.PredictionResponse | None, Any]:
        async with Channel(*_host_port(grpc_server.grpc_inference)) as channel:
            path = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
            request = bp.PredictionsRequest(model_name="echo", input={"data": text.encode()})
            async with channel.request(
                path, Cardinality.UNARY_UNARY, bp.PredictionsRequest, bp.PredictionResponse
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
                return reply, stream.trailing_metadata

    reply, trailers = asyncio.run(main())
    assert reply is not None
    assert json.loads(reply.prediction)["input"] == text
    assert trailers["x-model-version"] == "1.0"
