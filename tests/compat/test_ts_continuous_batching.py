"""TorchServe's continuous batching (`continuousBatching: true`), tested the TorchServe way.

A counter "LLM" written as TorchServe users write such handlers (a `BaseHandler` keeping its
per-request state in `ctx.cache` keyed by `context.request_ids`, setting
`context.stopping_criteria`), archived by the real torch-model-archiver 0.12, served by the
real server and called over chunked HTTP and gRPC `StreamPredictions`. Every chunk tells
what the handler saw in that step (the tags of the batch, whether its input was `{}`), so
the tests assert the contract on the handler's side from the client's side.

A sequence that waits on another (`until_done`, `until_gone`) makes ordering checks
deterministic: if the server did not admit, or did not drop, the other request, the waiting
one runs to the handler's step cap and reports `capped` (a failure, never a hang).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import aiohttp
import grpc
import pytest

from tests.conftest import run
from tests.grpc_server import grpcio_stubs
from tests.support import Server, http, server_config

MODEL = "counter"

HANDLER = """
    import json

    from ts.handler_utils.utils import send_intermediate_predict_response
    from ts.torch_handler.base_handler import BaseHandler

    CAP = 3000  # steps: a sequence waiting on something that never happens ends here


    class CounterLLM(BaseHandler):
        \"\"\"Emits one "token" per step per request until its own rule says stop.\"\"\"

        def initialize(self, ctx):
            self.context = ctx
            ctx.cache = {}
            self.finished = set()  # tags that got their last token
            self.gone = set()  # tags that left the batch without it (their client went away)
            self.initialized = True

        def preprocess(self, data):
            ids = list(self.context.request_ids.values())
            for req_id in list(self.context.cache):
                if req_id not in ids:  # as in TorchServe: the handler cleans up itself
                    self.gone.add(self.context.cache.pop(req_id)["tag"])
            rows = []
            for req_id, row in zip(ids, data):
                if req_id not in self.context.cache:
                    body = row.get("body") or row.get("data")
                    if isinstance(body, (bytes, bytearray)):
                        body = json.loads(body)
                    self.context.cache[req_id] = {**body, "emitted": 0, "id": req_id}
                rows.append((req_id, row == {}))
            return rows

        def inference(self, rows):
            tags = sorted(self.context.cache[req_id]["tag"] for req_id, _ in rows)
            out = []
            for req_id, empty in rows:
                state = self.context.cache[req_id]
                state["emitted"] += 1
                capped = state["emitted"] >= CAP
                if "tokens" in state:
                    last = state["emitted"] >= state["tokens"]
                elif "until_done" in state:
                    last = state["until_done"] in self.finished
                elif "until_gone" in state:
                    last = state["until_gone"] in self.gone
                else:
                    last = False
                out.append(
                    {
                        "tag": state["tag"],
                        "id": req_id,
                        "token": state["emitted"],
                        "batch": tags,
                        "empty_input": empty,
                        "last": last or capped,
                        "capped": capped and not last,
                        "gone": sorted(self.gone),
                    }
                )
            return out

        def postprocess(self, out):
            ids = self.context.request_ids
            for idx, result in enumerate(out):
                state = self.context.cache[ids[idx]]
                if state.get("intermediate") and result["token"] == 1:
                    send_intermediate_predict_response(
                        {idx: {"tag": state["tag"], "pre": True}},
                        {idx: ids[idx]},
                        "Intermediate Prediction success",
                        200,
                        self.context,
                    )
                if result["last"]:
                    self.finished.add(state["tag"])
                    del self.context.cache[ids[idx]]
            self.context.stopping_criteria = [_stop for _ in out]
            return out


    def _stop(result):
        return result["last"]
"""

MODEL_CONFIG = """\
minWorkers: 1
maxWorkers: 1
batchSize: 4
maxBatchDelay: 50
responseTimeout: 30
continuousBatching: true
"""


@pytest.fixture(scope="module")
def ts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tscb")
    store = root / "store"
    store.mkdir()
    (root / "handler.py").write_text(textwrap.dedent(HANDLER))
    (root / "model-config.yaml").write_text(MODEL_CONFIG)
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver, "--model-name", MODEL, "--version", "1.0",
            "--handler", str(root / "handler.py"),
            "--config-file", str(root / "model-config.yaml"),
            "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip
    server = Server(root, server_config(store, load_models=[f"{MODEL}.mar"]))
    server.start()
    server.wait_ready()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return grpcio_stubs(tmp_path_factory.mktemp("tscb_stubs"))


class Stream:
    """One chunked POST /predictions call, read HTTP chunk by HTTP chunk."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._chunks = self._read()

    async def _read(self) -> AsyncIterator[dict[str, Any]]:
        buffer = b""
        async for data, end in self.response.content.iter_chunks():
            buffer += data
            if end and buffer:
                yield json.loads(buffer)
                buffer = b""
        if buffer:
            yield json.loads(buffer)

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(anext(self._chunks), 30)

    async def rest(self) -> list[dict[str, Any]]:
        return [chunk async for chunk in self._chunks]


async def _open(session: aiohttp.ClientSession, server: Server, body: dict[str, Any]) -> Stream:
    response = await session.post(
        f"{server.inference}/predictions/{MODEL}",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    return Stream(response)


def test_a_sequence_streams_one_chunk_per_step_with_ts_stream_next(ts_server: Server) -> None:
    async def main() -> tuple[aiohttp.ClientResponse, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            stream = await _open(session, ts_server, {"tag": "solo", "tokens": 4})
            return stream.response, [await stream.next(), *await stream.rest()]

    response, chunks = run(main())
    # TorchServe's frontend sends the headers of the first chunk, which says `true`
    assert response.headers["ts_stream_next"] == "true"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert [c["token"] for c in chunks] == [1, 2, 3, 4]
    assert [c["last"] for c in chunks] == [False, False, False, True]
    assert [c["empty_input"] for c in chunks] == [False, True, True, True]  # continuing: {}
    assert len({c["id"] for c in chunks}) == 1  # context.request_ids is stable per request


def test_a_sequence_done_in_one_step_is_one_whole_response(ts_server: Server) -> None:
    url = f"{ts_server.inference}/predictions/{MODEL}"
    body = json.dumps({"tag": "one", "tokens": 1}).encode()
    status, body = http("POST", url, body, headers={"Content-Type": "application/json"})
    assert status == 200
    assert json.loads(body)["last"] is True

    async def headers() -> dict[str, str]:
        async with aiohttp.ClientSession() as session:
            body = {"tag": "one-h", "tokens": 1}
            async with session.post(f"{ts_server.inference}/predictions/{MODEL}", json=body) as r:
                await r.read()
                return dict(r.headers)

    seen = run(headers())
    # the last chunk's `ts_stream_next: false`, on a complete response (TorchServe's frontend
    # writes a bare chunk there: torchserve-gaps.md §2)
    assert seen["ts_stream_next"] == "false"
    assert "Content-Length" in seen
    assert "Transfer-Encoding" not in seen


def test_a_request_joining_gets_its_first_chunk_while_the_other_runs(ts_server: Server) -> None:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            first = await _open(session, ts_server, {"tag": "A", "until_done": "B"})
            a_head = [await first.next()]
            joiner = await _open(session, ts_server, {"tag": "B", "tokens": 3})
            b_chunks = [await joiner.next(), *await joiner.rest()]
            return a_head + await first.rest(), b_chunks

    a_chunks, b_chunks = run(main())
    assert b_chunks[0]["batch"] == ["A", "B"]  # B joined the running batch
    assert b_chunks[0]["empty_input"] is False
    assert b_chunks[1]["empty_input"] is True
    assert [c["token"] for c in b_chunks] == [1, 2, 3]
    last = a_chunks[-1]
    # A waited for B's last token: B ran to its end while A was still live
    assert last["last"], last
    assert not last["capped"], last
    assert len({c["id"] for c in a_chunks}) == 1
    assert a_chunks[-1]["batch"] == ["A"]  # B left the batch after its last chunk


def test_a_client_that_leaves_disappears_from_the_next_batch(ts_server: Server) -> None:
    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            leaver = await _open(session, ts_server, {"tag": "C"})  # runs until its client goes
            await leaver.next()
            watcher = await _open(session, ts_server, {"tag": "D", "until_gone": "C"})
            seen = [await watcher.next()]
            await leaver.next()
            leaver.response.close()  # the client goes away mid-stream
            return seen + await watcher.rest()

    chunks = run(main())
    assert chunks[0]["batch"] == ["C", "D"]
    last = chunks[-1]
    assert not last["capped"], last
    assert "C" in last["gone"]
    assert last["batch"] == ["D"]


def test_send_intermediate_predict_response_in_a_step(ts_server: Server) -> None:
    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            stream = await _open(
                session, ts_server, {"tag": "I", "tokens": 2, "intermediate": True}
            )
            return [await stream.next(), *await stream.rest()]

    chunks = run(main())
    assert chunks[0] == {"tag": "I", "pre": True}
    assert [c["token"] for c in chunks[1:]] == [1, 2]


def test_grpc_stream_predictions_relays_each_step(
    ts_server: Server, pb: dict[str, ModuleType]
) -> None:
    request = pb["inference_pb2"].PredictionsRequest(
        model_name=MODEL, input={"body": json.dumps({"tag": "G", "tokens": 3}).encode()}
    )
    with grpc.insecure_channel(ts_server.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
        replies = [json.loads(r.prediction) for r in stub.StreamPredictions(request, timeout=30)]
    assert [r["token"] for r in replies] == [1, 2, 3]
    assert [r["last"] for r in replies] == [False, False, True]


def test_a_grpc_client_that_cancels_disappears_from_the_next_batch(
    ts_server: Server, pb: dict[str, ModuleType]
) -> None:
    request = pb["inference_pb2"].PredictionsRequest(
        model_name=MODEL, input={"body": json.dumps({"tag": "E"}).encode()}
    )

    async def main() -> list[dict[str, Any]]:
        async with (
            grpc.aio.insecure_channel(ts_server.grpc_inference) as channel,
            aiohttp.ClientSession() as session,
        ):
            stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
            call = stub.StreamPredictions(request, timeout=30)
            replies = aiter(call)
            await anext(replies)
            watcher = await _open(session, ts_server, {"tag": "F", "until_gone": "E"})
            seen = [await watcher.next()]
            await anext(replies)
            call.cancel()
            return seen + await watcher.rest()

    chunks = run(main())
    assert chunks[0]["batch"] == ["E", "F"]
    assert not chunks[-1]["capped"], chunks[-1]
    assert "E" in chunks[-1]["gone"]


def test_describe_shows_continuous_batching(ts_server: Server) -> None:
    status, body = http("GET", f"{ts_server.management}/models/{MODEL}")
    assert status == 200
    assert json.loads(body)[0]["continuousBatching"] is True
    status, body = http("GET", f"{ts_server.management}/models/{MODEL}?customized=true")
    assert status == 200, body
    assert json.loads(body)[0]["customizedMetadata"] is None  # the step path never saw it
