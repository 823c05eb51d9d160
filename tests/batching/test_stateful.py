"""Stateful inference (TorchServe's sequence batching), end to end through the real server.

Handlers are written the TorchServe way (BaseHandler, state per executor keyed by the
sequence id) and archived by the real torch-model-archiver 0.12.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.batching.policy import Take, Wait
from serve.batching.sequence_policy import admit_quota, decide_sequences
from tests.conftest import metric_samples
from tests.grpc_server import grpcio_stubs
from tests.support import Server, http, server_config

SEQ = "ts_request_sequence_id"

# the sum of a sequence's inputs so far, and which executor thread holds it
SUMMING = """
    import threading
    from ts.torch_handler.base_handler import BaseHandler

    class Summing(BaseHandler):
        def initialize(self, context):
            self.context = context
            self.sums = {}  # this executor's state: one entry per sequence it serves
            self.initialized = True

        def handle(self, data, context):
            out = []
            for idx, row in enumerate(data):
                seq = context.get_sequence_id(idx)
                body = row.get("body") or row.get("data")
                if isinstance(body, (bytes, bytearray)):
                    body = body.decode()
                if body == "slow":
                    threading.Event().wait(0.5)  # holds the executor: later requests queue
                    body = "0"
                started = context.get_request_header(idx, context.header_key_sequence_start)
                last = context.get_request_header(idx, context.header_key_sequence_end)
                self.sums[seq] = self.sums.get(seq, 0) + int(body)
                out.append({"sum": self.sums[seq], "worker": threading.current_thread().name,
                            "start": started, "end": last})
            return out
"""

# plain sequence batching with TorchServe's intermediate responses: "n" sends n chunks first
CHUNKS = """
    from ts.handler_utils.utils import send_intermediate_predict_response
    from ts.torch_handler.base_handler import BaseHandler

    class Chunks(BaseHandler):
        def initialize(self, context):
            self.initialized = True

        def handle(self, data, context):
            n = int(data[0]["body"].decode())
            for i in range(n):
                send_intermediate_predict_response(
                    [f"{i};"], context.request_ids, "Intermediate", 200, context
                )
            return ["last;"]
"""

# the continuous variant: "n" streams n chunks (one per iteration), "0" ends the sequence,
# "-1" cancels the sequence's open stream
CONTINUOUS = """
    import threading
    from ts.torch_handler.base_handler import BaseHandler

    class Streams(BaseHandler):
        def initialize(self, context):
            self.context = context
            self.left = {}  # request id -> chunks still to send
            self.initialized = True

        def handle(self, data, context):
            cancelled = set()
            for idx, row in enumerate(data):
                rid = context.get_request_id(idx)
                if rid not in self.left:  # a new request (a continuing one comes as {})
                    n = int(row["body"].decode())
                    seq = context.get_sequence_id(idx)
                    if n == -1:
                        cancelled.add(seq)
                    if n == 0:
                        context.set_response_header(idx, context.header_key_sequence_end, seq)
                    self.left[rid] = max(n, 1)
                else:
                    threading.Event().wait(0.02)  # a step of work per chunk
            out, criteria = [], []
            for idx in range(len(data)):
                rid = context.get_request_id(idx)
                self.left[rid] -= 1
                done = self.left[rid] <= 0 or context.get_sequence_id(idx) in cancelled
                out.append(f"{context.get_sequence_id(idx)}:{self.left[rid]};")
                criteria.append(lambda _result, done=done: done)
                if done:
                    del self.left[rid]
            context.stopping_criteria = criteria
            return out
"""

STATEFUL = {
    "sequenceBatching": True,
    "minWorkers": 2,
    "maxWorkers": 2,
    "batchSize": 4,
    "maxBatchDelay": 20,
    "sequenceMaxIdleMSec": 400,
    "maxNumSequence": 16,
    "maxSequenceJobQueueSize": 1,
}


def archive(store: Path, work: Path, name: str, source: str, config: dict[str, Any]) -> None:
    """A .mar built by the real torch-model-archiver."""
    folder = work / name
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(source))
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config))
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver, "--model-name", name, "--version", "1.0",
            "--handler", str(folder / "handler.py"),
            "--config-file", str(folder / "model-config.yaml"),
            "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stateful(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("stateful")
    store, work = root / "store", root / "work"
    store.mkdir()
    work.mkdir()
    archive(store, work, "acc", SUMMING, STATEFUL)
    archive(store, work, "few", SUMMING, {**STATEFUL, "maxNumSequence": 1, "minWorkers": 1})
    archive(
        store,
        work,
        "life",
        SUMMING,
        {**STATEFUL, "sequenceMaxIdleMSec": 5000, "sequenceTimeoutMSec": 700, "minWorkers": 1},
    )
    archive(store, work, "chunks", CHUNKS, {**STATEFUL, "batchSize": 1, "minWorkers": 1})
    archive(
        store,
        work,
        "cont",
        CONTINUOUS,
        {**STATEFUL, "continuousBatching": True, "batchSize": 1, "minWorkers": 1},
    )
    config = server_config(
        store,
        enable_model_api=True,
        load_models=["acc.mar", "few.mar", "life.mar", "chunks.mar", "cont.mar"],
    )
    server = Server(root, config)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def post(
    server: Server, model: str, body: str, seq: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    """One prediction; (status, JSON body, response headers)."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/octet-stream", **({SEQ: seq} if seq else {})}
    request = urllib.request.Request(
        f"{server.inference}/predictions/{model}", data=body.encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, dict(error.headers)
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw.decode(), got


def test_a_request_without_an_id_opens_a_sequence_and_gets_its_id(stateful: Server) -> None:
    status, body, headers = post(stateful, "acc", "2")
    assert status == 200, body
    sid = headers[SEQ]
    assert sid.startswith("ts-seq-")
    assert body["sum"] == 2
    assert body["start"] == "true"  # TorchServe's start header for a server-made id
    status, body, headers = post(stateful, "acc", "5", sid)
    assert (status, body["sum"], body["start"], headers[SEQ]) == (200, 7, None, sid)


def test_interleaved_sequences_keep_their_state_on_their_executor(stateful: Server) -> None:
    first = post(stateful, "acc", "1")[2][SEQ]
    second = post(stateful, "acc", "10")[2][SEQ]
    workers: dict[str, set[str]] = {first: set(), second: set()}
    for n in range(2, 6):
        for sid, base in ((first, 0), (second, 10)):
            status, body, _ = post(stateful, "acc", str(base + n), sid)
            assert status == 200, body
            workers[sid].add(body["worker"])
    assert post(stateful, "acc", "0", first)[1]["sum"] == 1 + 2 + 3 + 4 + 5
    assert post(stateful, "acc", "0", second)[1]["sum"] == 10 + 12 + 13 + 14 + 15
    assert all(len(names) == 1 for names in workers.values())  # pinned
    assert workers[first] != workers[second]  # two executors: one sequence each


def test_client_ids_are_accepted_and_an_idle_sequence_expires(stateful: Server) -> None:
    assert post(stateful, "acc", "3", "mine-1")[1]["sum"] == 3
    assert post(stateful, "acc", "4", "mine-1")[1]["sum"] == 7
    deadline = time.monotonic() + 10
    while True:  # sequenceMaxIdleMSec is 400 ms: the id is refused once it expired
        status, body, _ = post(stateful, "acc", "1", "mine-1")
        if status != 200:
            break
        assert time.monotonic() < deadline, "the idle sequence never expired"
        time.sleep(0.5)  # longer than the idle limit: this wait is what expiry needs
    assert status == 503
    assert '"mine-1"' in body["message"]
    assert "sequenceMaxIdleMSec" in body["message"]


def test_a_sequence_ends_at_its_timeout_even_when_busy(stateful: Server) -> None:
    opened = time.monotonic()
    _, _, headers = post(stateful, "life", "1")
    sid = headers[SEQ]
    while True:
        status, body, _ = post(stateful, "life", "1", sid)
        if status != 200:
            break
        assert time.monotonic() - opened < 10
    assert time.monotonic() - opened >= 0.7
    assert status == 503
    assert sid in body["message"]
    assert "sequenceTimeoutMSec" in body["message"]


def test_max_num_sequence_refuses_one_more(stateful: Server) -> None:
    status, _, headers = post(stateful, "few", "1")
    assert status == 200
    status, body, got = post(stateful, "few", "1")
    assert status == 503, body
    assert "maxNumSequence" in body["message"]
    assert got["Retry-After"] == "1"
    assert post(stateful, "few", "1", headers[SEQ])[0] == 200  # the live one goes on


def test_max_sequence_job_queue_size_refuses_past_the_queue(stateful: Server) -> None:
    import concurrent.futures

    sid = post(stateful, "acc", "0")[2][SEQ]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: post(stateful, "acc", "slow", sid), range(3)))
    statuses = sorted(status for status, _, _ in replies)
    assert statuses == [200, 200, 503]  # one runs, one waits (the queue of 1), one refused
    refused = next(body for status, body, _ in replies if status == 503)
    assert sid in refused["message"]
    assert "maxSequenceJobQueueSize" in refused["message"]


def test_describe_and_metrics_show_the_sequences(stateful: Server) -> None:
    post(stateful, "acc", "1")
    status, raw = http("GET", f"{stateful.management}/models/acc")
    described = json.loads(raw)[0]
    assert status == 200
    assert {k: described[k] for k in ("stateful", "maxNumSequence", "sequenceMaxIdleMSec")} == {
        "stateful": True,
        "maxNumSequence": 16,
        "sequenceMaxIdleMSec": 400,
    }
    assert described["maxSequenceJobQueueSize"] == 1
    live = metric_samples(stateful, "serve_sequences_live")
    assert any(dict(k)["model_name"] == "acc" and v >= 1 for k, v in live.items())


def test_grpc_stream_predictions2_carries_the_sequence_id(
    stateful: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import grpc

    pb = grpcio_stubs(tmp_path_factory.mktemp("stubs"))
    with grpc.insecure_channel(stateful.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)

        def request(body: bytes, seq: str = "") -> Any:
            return pb["inference_pb2"].PredictionsRequest(
                model_name="acc", input={"body": body}, sequence_id=seq
            )

        (opened,) = list(stub.StreamPredictions2(iter([request(b"4")])))
        sid = opened.sequence_id
        assert sid.startswith("ts-seq-")
        # each request after the previous answer: maxSequenceJobQueueSize (1) counts a request
        # still queued, and a stream is read ahead of its answers
        feed: queue.Queue[Any] = queue.Queue()
        feed.put(request(b"1", sid))
        answers = stub.StreamPredictions2(iter(feed.get, None))
        replies = [next(answers)]
        feed.put(request(b"2", sid))
        replies.append(next(answers))
        feed.put(None)
        assert list(answers) == []
    assert [r.status.message for r in replies if r.status.code] == []
    assert [json.loads(r.prediction)["sum"] for r in replies] == [5, 7]
    assert {r.sequence_id for r in replies} == {sid}


def test_grpc_sequence_end_input_ends_the_sequence_after_its_answer(
    stateful: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import grpc

    pb = grpcio_stubs(tmp_path_factory.mktemp("stubs"))
    with grpc.insecure_channel(stateful.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)

        def one(inputs: dict[str, bytes], seq: str = "") -> Any:
            message = pb["inference_pb2"].PredictionsRequest(
                model_name="acc", input=inputs, sequence_id=seq
            )
            (reply,) = list(stub.StreamPredictions2(iter([message])))
            return reply

        opened = one({"body": b"3"})
        sid = opened.sequence_id
        assert json.loads(opened.prediction)["end"] is None
        # TorchServe's reading: "true" in any case; anything else is an ordinary request
        going = one({"body": b"1", "ts_request_sequence_end": b"no"}, sid)
        assert json.loads(going.prediction)["sum"] == 4
        last = one({"body": b"2", "ts_request_sequence_end": b"TRUE"}, sid)
        assert last.status.code == 0, last.status.message
        answered = json.loads(last.prediction)
        assert (answered["sum"], answered["end"]) == (6, "true")  # the handler saw the header
        after = one({"body": b"1"}, sid)
    assert after.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert sid in after.status.message
    assert "ts_request_sequence_end" in after.status.message
    # the REST path refuses the ended id the same way
    status, body, _ = post(stateful, "acc", "1", sid)
    assert status == 503
    assert "ended by its client" in body["message"]


def test_a_streamed_answer_carries_the_sequence_id_on_its_first_chunk(stateful: Server) -> None:
    import http.client
    from urllib.parse import urlsplit

    def stream(seq: str | None) -> tuple[dict[str, str], list[str]]:
        address = urlsplit(stateful.inference)
        assert address.hostname is not None
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            headers = {"Content-Type": "application/octet-stream", **({SEQ: seq} if seq else {})}
            connection.request("POST", "/predictions/chunks", body=b"3", headers=headers)
            response = connection.getresponse()
            assert response.status == 200
            got = dict(response.getheaders())
            return got, [c for c in response.read().decode().split(";") if c]
        finally:
            connection.close()

    headers, chunks = stream(None)
    sid = headers[SEQ]
    assert sid.startswith("ts-seq-")
    assert headers["Transfer-Encoding"] == "chunked"
    assert chunks == ["0", "1", "2", "last"]
    headers, chunks = stream(sid)  # the next request of that sequence: the same id back
    assert (headers[SEQ], headers["Transfer-Encoding"], chunks[-1]) == (sid, "chunked", "last")


def test_scaling_other_executors_keeps_sequences(stateful: Server) -> None:
    sid = post(stateful, "acc", "6")[2][SEQ]
    status, _ = http("PUT", f"{stateful.management}/models/acc?min_worker=3&synchronous=true")
    assert status == 200
    assert post(stateful, "acc", "1", sid)[1]["sum"] == 7
    status, _ = http("PUT", f"{stateful.management}/models/acc?min_worker=2&synchronous=true")
    assert status == 200  # the newest executor retires; it holds no older sequence
    assert post(stateful, "acc", "1", sid)[1]["sum"] == 8


def test_continuous_streams_end_and_cancel(stateful: Server) -> None:
    import concurrent.futures
    import urllib.request

    status, body, headers = post(stateful, "cont", "1")
    sid = headers[SEQ]
    assert status == 200
    assert body == f"{sid}:0;"

    def stream() -> list[str]:
        request = urllib.request.Request(
            f"{stateful.inference}/predictions/cont",
            data=b"100",
            headers={SEQ: sid, "Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert response.headers[SEQ] == sid  # on the first chunk's headers
            return [c for c in response.read().decode().split(";") if c]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        chunks = pool.submit(stream)
        deadline = time.monotonic() + 10
        while True:  # the cancel joins the streaming request's batch, then ends it
            status, body, _ = post(stateful, "cont", "-1", sid)
            assert status == 200, body
            if chunks.done() or time.monotonic() > deadline:
                break
        got = chunks.result()
    assert 1 <= len(got) < 100  # cut short by the cancel
    status, body, headers = post(stateful, "cont", "0", sid)  # the handler ends it
    assert status == 200
    assert headers["ts_request_sequence_end"] == sid
    status, body, _ = post(stateful, "cont", "1", sid)
    assert status == 503
    assert "ended by the handler" in body["message"]


def test_sequence_decision_table() -> None:
    table = [
        # ready, could_join, continuing, age, quota, delay → decision
        ((0, 2, 0, 0.0, 4, 0.1), Take(0)),
        ((2, 0, 0, 0.0, 4, 0.1), Take(2)),  # nothing else could join: now
        ((2, 1, 0, 0.0, 4, 0.1), Wait(0.1)),  # one more sequence may send: wait the delay
        ((2, 1, 0, 0.2, 4, 0.1), Take(2)),  # the delay passed
        ((5, 3, 0, 0.0, 4, 0.1), Take(4)),  # full
        ((1, 3, 1, 0.0, 1, 0.1), Take(1)),  # a continuing request never waits
    ]
    for (ready, could, cont, age, quota, delay), expected in table:
        got = decide_sequences(
            ready=ready,
            could_join=could,
            continuing=cont,
            oldest_age=age,
            quota=quota,
            max_delay=delay,
        )
        assert got == expected, (ready, could, cont, age, quota, delay)
    assert admit_quota(4, 3, continuous=False) == 4
    assert admit_quota(1, 1, continuous=True) == 1  # a cancel joins a stream at batch size 1
    assert admit_quota(4, 8, continuous=True) == 0
