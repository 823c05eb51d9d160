"""The REST side of the access log: aiohttp's access-logger hook, called once per response
after it was sent (so the byte count and the status are what the client got)."""

from __future__ import annotations

import logging
import time as clock

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from serve.http.common import STARTED
from serve.telemetry.access_log import NAME, AccessLog


def access_logger(access: AccessLog, with_query: bool) -> type[AbstractAccessLogger]:
    """The class aiohttp instantiates per server; `with_query` logs the query string too
    (management parameters; on the inference port a query can be model input: path only)."""

    class AccessLogger(AbstractAccessLogger):
        """One line per request to the access log; never a header value."""

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            started = request.get(STARTED)  # absent when aiohttp answered before routing
            seconds = time if started is None else clock.perf_counter() - started
            raw = request.raw_path
            access.emit(
                access.line(
                    request.remote,
                    request.method,
                    # as received (percent-encoded): a decoded %0A could forge a line
                    raw if with_query else raw.partition("?")[0],
                    response.status,
                    response.body_length,
                    seconds,
                    response.headers.get("x-request-id"),
                )
            )

    return AccessLogger


# aiohttp wants a logger to hand to the class; the lines go through AccessLog instead
LOGGER = logging.getLogger(NAME)
