"""Request deadlines end to end: X-Request-Timeout, a gRPC call deadline, max_request_time.

The models here record every input their handler sees in `<store>/<model>.calls`, then wait
for the test to create `<store>/<model>.gate`, so a test knows exactly what reached a handler
and holds the only executor busy for as long as it needs.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.helpers.clients import metric_samples, poll, run
from tests.helpers.grpc_stubs import grpcio_stubs
from tests.helpers.server import Server, ServerFactory, run_serve

COUNTED = """
    import os
    import time

    def handle(data, context):
        if data is None:
            return None
        base = os.path.join(
            os.path.dirname(context.system_properties["model_dir"]), context.model_name
        )
        inputs = []
        for row in data:
            value = row.get("body", row.get("data"))
            inputs.append(value if isinstance(value, str) else bytes(value).decode())
        with open(base + ".calls", "a") as calls:
            calls.write("".join(f"{text}\\n" for text in inputs))
        while not os.path.exists(base + ".gate"):  # the test opens the gate
            time.sleep(0.01)
        return inputs
"""

# one chunk, then the final answer once the gate opens
STREAMED = """
    import os
    import time
    from ts.handler_utils.utils import send_intermediate_predict_response

    def handle(data, context):
        if data is None:
            return None
        send_intermediate_predict_response(
            ["part;"] * len(data), context.request_ids, "Intermediate", 200, context
        )
        gate = os.path.join(
            os.path.dirname(context.system_properties["model_dir"]), context.model_name + ".gate"
        )
        while not os.path.exists(gate):
            time.sleep(0.01)
        return ["done"] * len(data)
"""

# adaptive_batching off: `pair` waits for a full batch of two, so both requests share one batch
MODELS = {
    "counted": {"1.0": {"batch_size": 1, "max_workers": 1}},
    "pair": {"1.0": {"batch_size": 2, "max_batch_delay": 20000}},
    "streamed": {"1.0": {"batch_size": 1}},
}


class Gated:
    """One gated model of a server: what its handler saw, and its gate."""

    def __init__(self, server: Server, model: str) -> None:
        store = Path(server.config["model_store"])
        self.url = f"{server.inference}/predictions/{model}"
        self.calls_file = store / f"{model}.calls"
        self.gate = store / f"{model}.gate"
        self.calls_file.unlink(missing_ok=True)
        self.gate.unlink(missing_ok=True)

    def calls(self) -> list[str]:
        return self.calls_file.read_text().split() if self.calls_file.exists() else []

    def open(self) -> None:
        self.gate.touch()


def _start(make: ServerFactory, **config: Any) -> Server:
    models = {model: STREAMED if model == "streamed" else COUNTED for model in MODELS}
    return make(models, models=MODELS, adaptive_batching=False, **config)


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    return _start(make_module_server)


def passed(server: Server, model: str, stage: str) -> float:
    """serve_deadline_exceeded_total for one model and stage."""
    samples = metric_samples(server, "serve_deadline_exceeded_total")
    key = (("model_name", model), ("model_version", "1.0"), ("stage", stage))
    return samples.get(key, 0.0)


def queue_depth(server: Server, model: str) -> float:
    samples = metric_samples(server, "serve_queue_depth")
    return samples.get((("model_name", model), ("model_version", "1.0")), 0.0)


async def _post(
    session: aiohttp.ClientSession, url: str, body: str, timeout_ms: str | None = None
) -> tuple[int, Any]:
    headers = {} if timeout_ms is None else {"X-Request-Timeout": timeout_ms}
    async with session.post(url, data=body.encode(), headers=headers) as response:
        raw = await response.read()
        return response.status, (raw.decode() if response.status == 200 else json.loads(raw))


async def _occupy(session: aiohttp.ClientSession, model: Gated) -> asyncio.Task[Any]:
    """Send "first" and wait until the handler holds it: the only executor is busy."""
    first = asyncio.create_task(_post(session, model.url, "first"))
    await poll(lambda: model.calls() == ["first"])
    return first


def test_a_deadline_that_passes_in_the_queue_is_answered_then_and_never_runs(
    server: Server,
) -> None:
    model = Gated(server, "counted")
    before = passed(server, "counted", "queued")

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            first = await _occupy(session, model)
            sent = time.monotonic()
            status, body = await _post(session, model.url, "second", timeout_ms="300")
            waited = time.monotonic() - sent
            # answered while the gate is still shut: by the timer, not when an executor freed
            assert not model.gate.exists()
            assert status == 504, body
            assert body["type"] == "DeadlineExceededException"
            assert "300 ms (the X-Request-Timeout header)" in body["message"]
            assert "queued" in body["message"]
            assert waited >= 0.3
            model.open()
            assert await first == (200, "first")

    run(main())
    assert model.calls() == ["first"], "the expired request reached the handler"
    assert passed(server, "counted", "queued") == before + 1


def test_a_deadline_that_passes_mid_batch_fails_only_that_request(server: Server) -> None:
    model = Gated(server, "pair")
    before = passed(server, "pair", "running")

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            patient = asyncio.create_task(_post(session, model.url, "patient"))
            await poll(lambda: queue_depth(server, "pair") == 1)  # it waits for a batch-mate
            status, body = await _post(session, model.url, "hurried", timeout_ms="500")
            assert status == 504, body
            assert "running" in body["message"]
            assert not model.gate.exists()
            await poll(lambda: sorted(model.calls()) == ["hurried", "patient"])
            model.open()
            assert await patient == (200, "patient")

    run(main())
    assert passed(server, "pair", "running") == before + 1


def test_a_deadline_that_passes_mid_stream_ends_the_stream(server: Server) -> None:
    model = Gated(server, "streamed")
    before = passed(server, "streamed", "running")

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            headers = {"X-Request-Timeout": "500"}
            async with session.post(model.url, data=b"x", headers=headers) as response:
                assert response.status == 200  # the first chunk had gone out
                body = await response.read()
            assert body == b"part;", "the stream did not end at the deadline"
            assert not model.gate.exists()

    run(main())
    assert passed(server, "streamed", "running") == before + 1
    model.open()


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "", "10 ms"])
def test_a_malformed_timeout_header_is_a_400_naming_it(server: Server, value: str) -> None:
    model = Gated(server, "counted")
    model.open()

    async def main() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            return await _post(session, model.url, "x", timeout_ms=value)

    status, body = run(main())
    assert status == 400, body
    assert "X-Request-Timeout" in body["message"]
    assert model.calls() == []


def test_a_grpc_deadline_in_the_queue_is_deadline_exceeded_and_never_runs(
    server: Server, tmp_path: Path
) -> None:
    pb = grpcio_stubs(tmp_path)
    model = Gated(server, "counted")
    before = passed(server, "counted", "queued")

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            first = await _occupy(session, model)
            with grpc.insecure_channel(server.grpc_inference) as channel:
                stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
                request = pb["inference_pb2"].PredictionsRequest(
                    model_name="counted", input={"body": b"late"}
                )
                with pytest.raises(grpc.RpcError) as raised:
                    await asyncio.to_thread(stub.Predictions, request, timeout=0.4)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await poll(lambda: passed(server, "counted", "queued") == before + 1)
            model.open()
            assert await first == (200, "first")

    run(main())
    assert model.calls() == ["first"], "the expired gRPC request reached the handler"


def test_max_request_time_bounds_every_request(make_server: ServerFactory) -> None:
    server = _start(make_server, max_request_time=0.5)
    model = Gated(server, "counted")

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            # no header: the server's bound; it passes while the handler runs
            status, body = await _post(s, model.url, "first")
            assert status == 504, body
            assert "500 ms (the server's max_request_time)" in body["message"]
            assert "running" in body["message"]
            # a longer header does not lift the server's bound; a shorter one wins
            status, body = await _post(s, model.url, "second", timeout_ms="60000")
            assert status == 504, body
            assert "500 ms (the server's max_request_time)" in body["message"]
            assert "queued" in body["message"]
            status, body = await _post(s, model.url, "third", timeout_ms="100")
            assert status == 504
            assert "100 ms (the X-Request-Timeout header)" in body["message"]
        model.open()

    run(main())
    assert model.calls() == ["first"]
    assert passed(server, "counted", "running") == 1
    assert passed(server, "counted", "queued") == 2


@pytest.mark.parametrize(("value", "fragment"), [(0, "greater than 0"), ("soon", "seconds")])
def test_a_bad_max_request_time_names_the_key_and_exits_2(
    tmp_path: Path, value: object, fragment: str
) -> None:
    (tmp_path / "serve.yaml").write_text(json.dumps({"max_request_time": value}))
    result = run_serve("--config", str(tmp_path / "serve.yaml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "max_request_time" in result.stderr
    assert fragment in result.stderr
