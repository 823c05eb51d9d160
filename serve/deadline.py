"""Request deadlines: a client's bound or the server's `max_request_time`, whichever is sooner.

A client bounds a request with the REST header `X-Request-Timeout` (milliseconds) or a gRPC
call deadline; the operator bounds every request with `max_request_time` (seconds). The
deadline rides in the InferenceRequest; the batcher arms one timer per request that has one
(none otherwise, so the common path stays free) and answers 504 the moment it passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.errors import BadRequest

TIMEOUT_HEADER = "X-Request-Timeout"
HEADER_SOURCE = "the X-Request-Timeout header"
GRPC_SOURCE = "the gRPC call deadline"
CONFIG_SOURCE = "the server's max_request_time"


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a request must be answered by (time.monotonic()) and what set that bound."""

    at: float
    seconds: float
    source: str

    def describe(self) -> str:
        """`200 ms (the X-Request-Timeout header)`, for the 504 message."""
        return f"{self.seconds * 1000:g} ms ({self.source})"


def header_timeout(value: str | None) -> float | None:
    """Seconds from an `X-Request-Timeout` value: a positive integer of milliseconds."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise BadRequest(
            f"Invalid {TIMEOUT_HEADER} header {value!r}: "
            "expected a positive integer number of milliseconds"
        )
    return int(text) / 1000


def choose(
    started: float, client: float | None, client_source: str, max_request_time: float | None
) -> Deadline | None:
    """The sooner of the client's bound (seconds from `started`) and max_request_time."""
    if client is not None and (max_request_time is None or client <= max_request_time):
        return Deadline(started + client, client, client_source)
    if max_request_time is not None:
        return Deadline(started + max_request_time, max_request_time, CONFIG_SOURCE)
    return None
