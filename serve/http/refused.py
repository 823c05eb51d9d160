"""aiohttp's server logger, with the requests its HTTP parser refuses logged as one short line.

A request with a malformed header (a control byte in a value, a bad header name, a line too
long) is answered 400 by aiohttp, which then logs an ERROR with a full traceback. Any client
could flood the log with those. Here each is one WARNING line naming the client and the
parser's reason (never the bytes it sent), and at most one a second, with a count of the ones
left out. Every other error keeps aiohttp's ERROR line and traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

INTERVAL = 1.0  # seconds between two lines about refused requests


class RefusedRequestLogger(logging.LoggerAdapter[logging.Logger]):
    """The `logger` an aiohttp server is given; shared by every listener."""

    def __init__(self, logger: logging.Logger = server_logger, interval: float = INTERVAL) -> None:
        super().__init__(logger, {})
        self._interval = interval
        self._next = 0.0
        self._left_out = 0

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        """aiohttp's `log_exception`: "Error handling request from %s", remote, exc_info."""
        error = kwargs.get("exc_info")
        if not isinstance(error, HttpProcessingError) or not 400 <= error.code < 500:
            super().exception(msg, *args, **kwargs)
            return
        now = time.monotonic()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + self._interval
        left_out, self._left_out = self._left_out, 0
        reason = error.message.strip().splitlines()[0].rstrip(":") if error.message else ""
        self.logger.warning(
            "Refused a malformed HTTP request from %s (%d %s)%s",
            args[0] if args else "?",
            error.code,
            reason or "Bad Request",
            f"; {left_out} more left out of this log" if left_out else "",
        )
