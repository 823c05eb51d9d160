"""The access log: one line per REST request and gRPC call on the `serve.access` logger.

Fields: client address, method (`GRPC` for gRPC), path (the RPC's method path for gRPC),
status (HTTP status, or the gRPC status name), bytes sent (`-` for gRPC), latency in ms, and the
request id (`-` when there is none). Never a header value: the Authorization header, and the
keys in it, stay out. The event loop only formats the message and queues it; a thread
writes it to stderr, so a slow disk or pipe never stalls requests.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Callable

import orjson

from serve.config import Config

ACCESS = logging.getLogger("serve.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


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
    """The same fields as one JSON object (the time is added by the writer thread)."""
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


LineFormat = Callable[[str | None, str, str, int | str, int | None, float, str | None], str]


def line_format(config: Config) -> LineFormat:
    """The formatting function the config asks for."""
    return json_line if config.access_log_format == "json" else text_line


class _JsonTime(logging.Formatter):
    """Adds `"time"` (ISO 8601, UTC) in front of a JSON access line."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.created % 1 * 1000)
        return f'{{"time":"{moment}.{millis:03d}Z",{record.getMessage()[1:]}'


def start(config: Config) -> Callable[[], None] | None:
    """Route `serve.access` to stderr through a writer thread; returns its stop (flushes)."""
    if not config.access_log:
        return None
    writer = logging.StreamHandler(sys.stderr)
    json_format = config.access_log_format == "json"
    writer.setFormatter(_JsonTime() if json_format else logging.Formatter(TEXT_FORMAT))
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(lines, writer)
    handler = logging.handlers.QueueHandler(lines)
    ACCESS.addHandler(handler)
    ACCESS.setLevel(logging.INFO)
    ACCESS.propagate = False  # written once, by the thread, in its own format
    listener.start()

    def stop() -> None:
        ACCESS.removeHandler(handler)
        listener.stop()

    return stop
