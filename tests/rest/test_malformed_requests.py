"""A request aiohttp's parser refuses (a malformed header) costs one short log line, not a
traceback, so no client can flood the log; the server goes on answering everyone else."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import Server, http

pytestmark = pytest.mark.usefixtures("loop_guard")

MALFORMED = (
    b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",  # a control byte in a value
    b"GET /ping HTTP/1.1\r\nHost: x\r\nBad\x01Name: v\r\n\r\n",  # a bad header name
    b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\x00\r\n\r\n",
)


def _send_raw(server: Server, payload: bytes) -> bytes:
    host, port = server.config["inference_address"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(payload)
        return connection.recv(4096)


def test_malformed_headers_are_refused_with_one_line_each_and_no_traceback(
    server: Server,
) -> None:
    start = len(server.log())
    for _ in range(3):
        for payload in MALFORMED:
            assert _send_raw(server, payload).startswith(b"HTTP/1.0 400 ")
    assert http("GET", f"{server.inference}/ping")[0] == 200
    deadline = time.monotonic() + 10
    while "Refused a malformed HTTP request" not in server.log()[start:]:
        assert time.monotonic() < deadline, server.log()[start:]
        time.sleep(0.05)  # polling the server's log file for its line, not synchronising on time
    logged = server.log()[start:]
    assert "Traceback" not in logged
    assert "Error handling request" not in logged
    refused = [line for line in logged.splitlines() if "Refused a malformed" in line]
    # at most one line a second: nine refusals in well under a few seconds
    assert 1 <= len(refused) <= 3, refused
    assert all(" WARNING " in line and "\\x01" not in line for line in refused)
