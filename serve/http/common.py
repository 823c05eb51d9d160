"""What the three REST apps share: typed app state, JSON replies, and the error middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from serve.config import Config
from serve.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServeError,
)
from serve.metrics import ServerMetrics
from serve.models.registry import Registry

logger = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", Registry)
CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", ServerMetrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def error_response(error: ServeError) -> web.Response:
    """TorchServe's `{"code", "type", "message"}` error body."""
    return json_response(error.body(), error.status, error.headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a JSON error body; unknown errors become one logged 500."""
    try:
        return await handler(request)
    except ServeError as error:
        return error_response(error)
    except web.HTTPException as exc:
        return error_response(_from_http(exc))
    except Exception:
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return error_response(InternalError("Internal server error; see the server log"))


def _from_http(exc: web.HTTPException) -> ServeError:
    if exc.status == 404:
        return NotFound("Requested resource is not found, please refer to API document.")
    if exc.status == 405:
        return MethodNotAllowed("Requested method is not allowed, please refer to API document.")
    if exc.status == 413:
        return PayloadTooLarge(exc.text or "Request body is too large")
    return ServeError(exc.reason or "HTTP error", status=exc.status)


# --- query/JSON parameter parsing: every bad value is a 400 naming the parameter -----------


def int_param(params: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    """An optional integer parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise BadRequest(f"Parameter {name} must be an integer, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"Parameter {name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise BadRequest(f"Parameter {name} must be at least {minimum}, got {value}")
    return value


def float_param(params: Mapping[str, Any], name: str, minimum: float) -> float | None:
    """An optional number parameter (strictly greater than minimum)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"Parameter {name} must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or not value > minimum:
        raise BadRequest(f"Parameter {name} must be greater than {minimum:g}, got {raw!r}")
    return value


def bool_param(params: Mapping[str, Any], name: str, default: bool) -> bool:
    """An optional true/false parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadRequest(f"Parameter {name} must be true or false, got {raw!r}")


def str_param(params: Mapping[str, Any], name: str) -> str | None:
    """An optional string parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"Parameter {name} must be a string, got {raw!r}")
    return raw


def check_known(params: Mapping[str, Any], known: frozenset[str]) -> None:
    """Refuse unknown parameter names (usually a typo), suggesting the closest one."""
    import difflib

    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BadRequest(f"Unknown parameter {name!r}{hint}")
