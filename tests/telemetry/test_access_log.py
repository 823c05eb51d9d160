"""The access log through the real server: one line per REST request and gRPC call, text or
JSON, never a key. Lines are read from the server's log after it stopped (which flushes it)."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

import grpc
import pytest

from serve.telemetry.access_log import AccessLog
from tests.helpers import handlers as src
from tests.helpers.clients import keys, wait_until
from tests.helpers.grpc_stubs import grpcio_stubs
from tests.helpers.server import Server, ServerFactory, finish

TEXT = re.compile(
    r"serve\.access: (?P<client>\S+) \"(?P<method>\S+) (?P<path>\S+)\" (?P<status>\S+) "
    r"(?P<bytes>\S+) (?P<ms>\d+\.\d{3})ms (?P<request_id>\S+)$"
)
PREDICT = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


@dataclass(frozen=True)
class Line:
    client: str
    method: str
    path: str
    status: str
    bytes: str
    ms: float
    request_id: str


def text_lines(log: str) -> list[Line]:
    found = []
    for raw in log.splitlines():
        if "serve.access:" in raw:
            match = TEXT.search(raw)
            assert match, f"unparsable access line: {raw}"
            fields: dict[str, Any] = match.groupdict()
            found.append(Line(**{**fields, "ms": float(fields["ms"])}))
    return found


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in log.splitlines() if raw.startswith("{")]


def send(
    url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str]
) -> tuple[int, int]:
    """(status, body length) of one request."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, len(response.read())
    except urllib.error.HTTPError as error:
        return error.code, len(error.read())


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return grpcio_stubs(tmp_path_factory.mktemp("stubs"))


def _traffic(server: Server, pb: dict[str, ModuleType]) -> dict[str, Any]:
    """A success, errors and a refusal over REST and gRPC; returns what the client saw."""
    current = keys(server)
    infer = {"Authorization": f"Bearer {current['inference']}", "x-request-id": "rid-ok-1"}
    seen: dict[str, Any] = {"keys": current}
    seen["ok"] = send(
        server.inference + "/predictions/echo", method="POST", body=b"hi", headers=infer
    )
    seen["missing"] = send(
        server.inference + "/predictions/nope", method="POST", body=b"x", headers=infer
    )
    seen["refused"] = send(
        server.inference + "/predictions/echo",
        method="POST",
        body=b"x",
        headers={"Authorization": "Bearer wrongkey"},
    )
    # a percent-encoded line break stays encoded: no forged line in the log
    seen["forged"] = send(
        server.inference + "/predictions/a%0Aforged%20line",
        method="POST",
        body=b"x",
        headers=infer,
    )
    management = {"Authorization": f"Bearer {current['management']}"}
    seen["list"] = send(server.management + "/models?limit=5", headers=management)
    send(
        server.inference + "/invocations?model_name=echo&secret=s3cr3t",
        method="POST",
        body=b"x",
        headers=infer,
    )
    request = pb["inference_pb2"].PredictionsRequest(model_name="echo", input={"body": b"x"})
    with grpc.insecure_channel(server.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
        meta = (("authorization", f"Bearer {current['inference']}"), ("x-request-id", "grpc-1"))
        stub.Predictions(request, metadata=meta)
        with pytest.raises(grpc.RpcError):  # a request id with a space is not logged
            stub.Predictions(request, metadata=(("x-request-id", "has space"),))
    return seen


def _server(make: ServerFactory, **config: Any) -> Server:
    """A server with token auth on and `echo` loaded."""
    return make({"echo": src.ECHO}, disable_token_authorization=False, **config)


def test_text_lines_for_rest_and_grpc_without_keys(make_server: ServerFactory, pb: Any) -> None:
    server = _server(make_server)
    try:
        seen = _traffic(server, pb)
    finally:
        finish(server)
    log = server.log()
    lines = text_lines(log)
    by_path: dict[tuple[str, str], list[Line]] = {}
    for line in lines:
        by_path.setdefault((line.method, line.path), []).append(line)

    (ok,) = [x for x in by_path[("POST", "/predictions/echo")] if x.status == "200"]
    assert ok.client == "127.0.0.1"
    assert ok.request_id == "rid-ok-1"
    assert int(ok.bytes) > seen["ok"][1]  # the body and the headers that carried it
    assert 0 < ok.ms < 30_000
    (refused,) = [x for x in by_path[("POST", "/predictions/echo")] if x.status == "401"]
    assert refused.request_id == "-"
    assert int(refused.bytes) > seen["refused"][1]
    (missing,) = by_path[("POST", "/predictions/nope")]
    assert missing.status == "404"
    # management parameters are logged; inference queries (possible model inputs) are not
    assert ("GET", "/models?limit=5") in by_path
    assert by_path[("GET", "/models?limit=5")][0].status == "200"
    assert ("POST", "/invocations") in by_path
    assert "s3cr3t" not in log
    assert by_path[("POST", "/predictions/a%0Aforged%20line")][0].status == "404"
    assert not [raw for raw in log.splitlines() if raw.startswith("forged")]
    # readiness polling by the test fixture is logged too, without a key
    assert by_path[("GET", "/ready")][-1].status == "200"
    grpc_lines = by_path[("GRPC", PREDICT)]
    assert [(x.status, x.request_id, x.bytes) for x in grpc_lines] == [
        ("OK", "grpc-1", "-"),
        ("UNAUTHENTICATED", "-", "-"),
    ]
    assert not [key for key in seen["keys"].values() if key in log]
    assert "Bearer" not in log


def test_json_lines(make_server: ServerFactory, pb: Any) -> None:
    server = _server(make_server, access_log_format="json")
    try:
        seen = _traffic(server, pb)
    finally:
        finish(server)
    log = server.log()
    lines = json_lines(log)
    assert "serve.access:" not in log  # JSON lines only, one object per line
    fields = {"time", "client", "method", "path", "status", "bytes", "ms", "request_id"}
    assert all(set(line) == fields for line in lines)
    (ok,) = [x for x in lines if x["path"] == "/predictions/echo" and x["status"] == 200]
    assert ok["request_id"] == "rid-ok-1"
    assert ok["client"] == "127.0.0.1"
    assert ok["bytes"] > seen["ok"][1]
    assert isinstance(ok["ms"], float)
    assert datetime.fromisoformat(ok["time"]).tzinfo is not None
    (refused,) = [x for x in lines if x["path"] == "/predictions/echo" and x["status"] == 401]
    assert refused["request_id"] is None
    grpc_lines = [x for x in lines if x["method"] == "GRPC"]
    assert [(x["path"], x["status"], x["bytes"]) for x in grpc_lines] == [
        (PREDICT, "OK", None),
        (PREDICT, "UNAUTHENTICATED", None),
    ]
    assert not [key for key in seen["keys"].values() if key in log]


def test_access_log_off(make_server: ServerFactory, pb: Any) -> None:
    server = _server(make_server, access_log=False)
    try:
        _traffic(server, pb)
    finally:
        finish(server)
    log = server.log()
    assert "serve.access" not in log
    assert not json_lines(log)
    assert "Server stopped" in log


def test_every_line_of_a_burst_is_written_while_serving_and_at_stop(
    make_server: ServerFactory,
) -> None:
    """Concurrent requests from many threads: each gets its one line (the writer gathers lines
    in windows; none is lost between windows or at stop), and lines reach the log while the
    server still runs, not only when it stops."""
    server = _server(make_server)
    infer = {"Authorization": f"Bearer {keys(server)['inference']}"}
    url = server.inference + "/predictions/echo"
    try:
        first = {**infer, "x-request-id": "burst-first"}
        assert send(url, method="POST", body=b"x", headers=first)[0] == 200
        wait_until(lambda: "burst-first" in server.log())  # written while serving

        def one(i: int) -> int:
            headers = {**infer, "x-request-id": f"burst-{i}"}
            return send(url, method="POST", body=b"x", headers=headers)[0]

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(one, range(300)))
        assert statuses == [200] * 300
    finally:
        finish(server)
    ids = [line.request_id for line in text_lines(server.log())]
    assert sorted(i for i in ids if i.startswith("burst-") and i != "burst-first") == sorted(
        f"burst-{i}" for i in range(300)
    )
    assert ids.count("burst-first") == 1


def test_stop_writes_the_lines_of_the_window_still_gathering() -> None:
    """The writer gathers for GATHER_SECONDS; `stop` right after a burst still writes every
    line, each once, in order (the server stops its access log last, after the listeners)."""
    stream = io.StringIO()
    log = AccessLog(json_format=False, stream=stream)
    log.start()
    for i in range(1000):
        log.emit(log.line("127.0.0.1", "POST", "/predictions/m", 200, 10, 0.001, f"id-{i}"))
    log.stop()
    written = [line.request_id for line in text_lines(stream.getvalue())]
    assert written == [f"id-{i}" for i in range(1000)]
