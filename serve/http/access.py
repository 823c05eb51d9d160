"""The REST side of the access log: aiohttp's access-logger hook, called once per response
after it was sent (so the byte count and the status are what the client got)."""

from __future__ import annotations

import logging
import time as clock

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from serve.access_log import json_line, text_line
from serve.http.common import STARTED

JSON_FORMAT = "json"  # the `log_format` aiohttp hands over; anything else means text
WITH_QUERY = "+query"  # suffix: log the query string too (management: parameters, no secrets)


class AccessLogger(AbstractAccessLogger):
    """Writes one access line per request to `serve.access`; never a header value."""

    __slots__ = ("_line", "_query")

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._line = json_line if log_format.startswith(JSON_FORMAT) else text_line
        # inference queries can be model inputs (legacy /predict): the path alone there
        self._query = log_format.endswith(WITH_QUERY)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = request.path_qs if self._query else request.path
        started = request.get(STARTED)  # absent when aiohttp answered before routing
        seconds = time if started is None else clock.perf_counter() - started
        self.logger.info(
            self._line(
                request.remote,
                request.method,
                path,
                response.status,
                response.body_length,
                seconds,
                response.headers.get("x-request-id"),
            )
        )
