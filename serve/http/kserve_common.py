"""What the KServe v1 and Open Inference Protocol REST doors share: their error body.

KServe's and Triton's clients read `{"error": "..."}` (tritonclient raises
InferenceServerException with it, the kserve SDK puts it in its HTTPStatusError), so these
paths answer errors that way; TorchServe's own paths keep `{"code", "type", "message"}`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import orjson
from aiohttp import web

from serve.errors import BadRequest, InternalError, ServeError
from serve.http.common import Handler, error_headers, from_http

logger = logging.getLogger(__name__)


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Compact JSON, as KServe and Triton answer."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_reply(error: ServeError) -> web.Response:
    """The OIP error body with the error's status."""
    return json_reply({"error": error.message}, error.status, error_headers(error) or None)


def oip_errors(handler: Handler) -> Handler:
    """Map every failure of `handler` to `{"error": ...}`; unknown ones become a logged 500."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServeError as error:
            return error_reply(error)
        except web.HTTPException as exc:
            return error_reply(from_http(exc))
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, request.path)
            return error_reply(InternalError("Internal server error; see the server log"))

    return guarded


def parse_json(body: bytes | bytearray | memoryview, what: str, hint: str = "") -> dict[str, Any]:
    """A JSON object body, or a 400 saying what is wrong with it (and `hint`: what to send)."""
    advice = f"; {hint}" if hint else ""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not _is_utf8(body):  # orjson would say "surrogates not allowed"
            raise BadRequest(f"{what} must be JSON, and is not even UTF-8 text{advice}") from None
        raise BadRequest(f"{what} is not valid JSON: {exc}{advice}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object{advice}")
    return value


def _is_utf8(body: bytes | bytearray | memoryview) -> bool:
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
