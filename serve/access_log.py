"""The access log: one line per REST request and gRPC call, named `serve.access`, on stderr.

Fields: client address, method (`GRPC` for gRPC), path (the RPC's method path for gRPC),
status (HTTP status, or the gRPC status name), bytes sent (headers included; `-` for gRPC),
latency in ms, and the request id (`-` when there is none). Never a header value: the
Authorization header, and the keys in it, stay out.

The event loop only formats the fields and queues the line (about a microsecond); a thread
stamps the time and writes whatever has queued in one write, so a slow disk or pipe never
stalls requests. This skips the `logging` machinery (a LogRecord, a handler lock and a flush
per line would cost the loop more than the request's own routing); the lines keep the layout
of the other log lines.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import orjson

from serve.config import Config

NAME = "serve.access"
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

    def __init__(self, json_format: bool, stream: TextIO | None = None) -> None:
        self.line: LineFormat = json_line if json_format else text_line
        self._json = json_format
        self._stream = stream or sys.stderr
        self._lines: queue.SimpleQueue[tuple[float, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._second = -1
        self._stamp = ""

    def emit(self, line: str) -> None:
        """Queue one line (called on the event loop)."""
        self._lines.put((time.time(), line))

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._lines.put(None)
        self._thread.join()

    def _write(self) -> None:
        while True:
            batch = [self._lines.get()]
            while not self._lines.empty():  # whatever queued meanwhile goes in the same write
                batch.append(self._lines.get())
            done = None in batch
            text = "".join(self._render(item) for item in batch if item is not None)
            if text:
                self._stream.write(text)
                self._stream.flush()
            if done:
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
    log = AccessLog(config.access_log_format == "json")
    log.start()
    return log
