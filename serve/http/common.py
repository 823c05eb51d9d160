"""What the three REST apps share: typed app state, JSON replies, and the error middleware."""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from serve.auth.keys import Tokens
from serve.config import Config
from serve.errors import (
    InternalError,
    InvalidKey,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServeError,
)
from serve.models.registry import Registry
from serve.telemetry.metrics import ServerMetrics
from serve.telemetry.torchserve import StatusCounts

logger = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", Registry)
CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", ServerMetrics)
TOKENS = web.AppKey("tokens", Tokens)  # only when token authorization is on
# when the guard took the request: the access log's latency (uvloop's clock counts whole ms)
STARTED = web.RequestKey("started", float)

MODEL_VERSION = "X-Model-Version"  # names the version that answered (routed or named)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KeyCheck = Callable[[str | None], bool]


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Pretty-printed JSON with a trailing newline, as TorchServe answers."""
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n",
        status=status,
        content_type="application/json",
        headers=headers,
    )


def status_response(message: str, status: int = 200) -> web.Response:
    """TorchServe's `{"status": "..."}` success body."""
    return json_response({"status": message}, status)


def error_headers(error: ServeError) -> dict[str, str]:
    """An error's response headers, with the version it was raised for (X-Model-Version)."""
    if error.model_version is None:
        return error.headers
    return {**error.headers, MODEL_VERSION: error.model_version}


def error_response(error: ServeError) -> web.Response:
    """TorchServe's `{"code", "type", "message"}` error body."""
    return json_response(error.body(), error.status, error_headers(error))


ErrorShape = Callable[[ServeError], web.Response]
# Handlers whose door answers errors in its own body shape (the OpenAI door), 401s included:
# the guard renders every error of such a handler with it.
ERROR_SHAPES: weakref.WeakKeyDictionary[Handler, ErrorShape] = weakref.WeakKeyDictionary()

# Every handler built by json_errors: an app refuses to start with a route outside it (one
# that would skip the token check).
GUARDED: weakref.WeakSet[Handler] = weakref.WeakSet()


def json_errors(
    handler: Handler,
    statuses: StatusCounts | None = None,
    key: tuple[KeyCheck, str] | None = None,
) -> Handler:
    """Map every failure of `handler` to a JSON error body; unknown ones become a logged 500.

    A decorator on each route rather than an aiohttp middleware: a middleware costs every
    request two extra calls on the hot path. `statuses` counts the responses by class. With
    `key` (a check of the Authorization header, and the key's name for the message), a request
    without that key gets 401 before `handler` runs.
    """
    allows, kind = key if key is not None else (None, "")
    render = ERROR_SHAPES.get(handler, error_response)

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        request[STARTED] = time.perf_counter()
        try:
            if allows is not None and not allows(request.headers.get("Authorization")):
                raise InvalidKey(
                    "Token Authorization failed. Token either incorrect, expired, or not "
                    f"provided correctly: this API takes the {kind} key from key_file.json "
                    "as 'Authorization: Bearer <key>'"
                )
            response = await handler(request)
        except ServeError as error:
            response = render(error)
        except web.HTTPException as exc:
            response = render(from_http(exc))
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, request.path)
            response = render(InternalError("Internal server error; see the server log"))
        if statuses is not None:
            statuses.add(response.status)
        return response

    GUARDED.add(guarded)
    return guarded


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any path no route serves."""
    raise NotFound("Requested resource is not found, please refer to API document.")


def from_http(exc: web.HTTPException) -> ServeError:
    if exc.status == 404:
        return NotFound("Requested resource is not found, please refer to API document.")
    if exc.status == 405:
        return MethodNotAllowed("Requested method is not allowed, please refer to API document.")
    if exc.status == 413:
        return PayloadTooLarge(exc.text or "Request body is too large")
    return ServeError(exc.reason or "HTTP error", status=exc.status)
