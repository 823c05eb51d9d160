"""The access log: one line per REST request and gRPC call, named `serve.access`, on stderr.

Fields: client address, method (`GRPC` for gRPC), path (the RPC's method path for gRPC),
status (HTTP status, or the gRPC status name), bytes sent (headers included; `-` for gRPC),
latency in ms, and the request id (`-` when there is none). Never a header value: the
Authorization header, and the keys in it, stay out.

The event loop only formats the fields and appends the line to a deque (about a microsecond);
a thread stamps the time and writes whatever has queued in one write, so a slow disk or pipe
never stalls requests. The thread is woken by the first line after a write only, then gathers
for `GATHER_SECONDS`: under load the loop pays one thread wake-up per window rather than one
per request (a wake-up per line made the writer fight the loop for the GIL on every request).
This skips the `logging` machinery (a LogRecord, a handler lock and a flush per line would cost
the loop more than the request's own routing); the lines keep the layout of the other log lines.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import orjson

from serve.config import Config
from serve.telemetry import log_files

NAME = "serve.access"
GATHER_SECONDS = 0.02  # how long the writer collects lines before a write (the log's lag)
LineFormat = Callable[[str | None, str, str, int | str, int | None, float, str | None], str]


def text_line(
    client: str | None,
    method: str,
    path: str,
    status: int | str,
    size: int | None,
    seconds: float,
    request_id: str | None,
) -> str:
    """`127.0.0.1 "POST /predictions/m" 200 42 1.234ms <request id>`."""
    sent = "-" if size is None else size
    return (
        f'{client or "-"} "{method} {path}" {status} {sent} '
        f"{seconds * 1000:.3f}ms {request_id or '-'}"
    )


def json_line(
    client: str | None,
    method: str,
    path: str,
    status: int | str,
    size: int | None,
    seconds: float,
    request_id: str | None,
) -> str:
    """The same fields as one JSON object (the writer puts `"time"` in front)."""
    return orjson.dumps(
        {
            "client": client,
            "method": method,
            "path": path,
            "status": status,
            "bytes": size,
            "ms": round(seconds * 1000, 3),
            "request_id": request_id,
        }
    ).decode()


class AccessLog:
    """A queue of lines and the thread that writes them."""

    def __init__(self, json_format: bool, stream: TextIO | _Tee | None = None) -> None:
        self.line: LineFormat = json_line if json_format else text_line
        self._json = json_format
        self._stream: TextIO | _Tee = stream or sys.stderr
        self._lines: collections.deque[tuple[float, str]] = collections.deque()
        self._wake = threading.Event()  # set when lines wait; cleared by the writer
        self._stopping = False
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._second = -1
        self._stamp = ""

    def emit(self, line: str) -> None:
        """Queue one line (called on the event loop)."""
        self._lines.append((time.time(), line))
        if not self._wake.is_set():  # the first line since the last write wakes the writer
            self._wake.set()

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _write(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopping:
                time.sleep(GATHER_SECONDS)  # let the lines of this window queue up
            # cleared before draining: a line appended after this sets it again, so no line
            # waits for a later one to be written
            self._wake.clear()
            batch = []
            while self._lines:
                batch.append(self._lines.popleft())
            if batch:
                self._stream.write("".join(map(self._render, batch)))
                self._stream.flush()
            if self._stopping and not self._lines:
                return

    def _render(self, item: tuple[float, str]) -> str:
        moment, line = item
        second = int(moment)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._stamp = time.strftime(
                "%Y-%m-%dT%H:%M:%S" if self._json else "%Y-%m-%d %H:%M:%S",
                time.gmtime(second) if self._json else time.localtime(second),
            )
        millis = int((moment - second) * 1000)
        if self._json:
            return f'{{"time":"{self._stamp}.{millis:03d}Z",{line[1:]}\n'
        return f"{self._stamp},{millis:03d} INFO [MainThread] {NAME}: {line}\n"


def start(config: Config) -> AccessLog | None:
    """The running access log the config asks for, None when it is off."""
    if not config.access_log:
        return None
    extra = log_files.access_file()
    log = AccessLog(config.access_log_format == "json", None if extra is None else _Tee(extra))
    log.start()
    return log


class _Tee:
    """stderr and access_log.log (serve.telemetry.log_files), written by the one thread."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def write(self, text: str) -> None:
        sys.stderr.write(text)
        self._file.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
        self._file.flush()
