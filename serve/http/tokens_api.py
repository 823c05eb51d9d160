"""`GET /token?type=management|inference` on the management port: renew a key (API key)."""

from __future__ import annotations

from aiohttp import web

from serve.auth.keys import Kind
from serve.errors import BadRequest, NotFound
from serve.http.common import TOKENS, status_response

_RENEWABLE: dict[str, Kind] = {"management": "management", "inference": "inference"}


def routes() -> list[web.RouteDef]:
    """The token route of the management app."""
    return [web.get("/token", renew)]


async def renew(request: web.Request) -> web.Response:
    """Replace one key; the old one is refused from the moment this answers.

    The new key is in the key file only, never in the reply: replies end up in logs.
    """
    tokens = request.app.get(TOKENS)
    if tokens is None:
        raise NotFound("Token authorization is disabled on this server; there is no key to renew")
    given = request.query.get("type")
    kind = _RENEWABLE.get(given or "")
    if kind is None:
        raise BadRequest(
            "Parameter type is required: management or inference"
            if given is None
            else f"Parameter type must be management or inference, got {given!r}"
        )
    await tokens.renew(kind)
    return status_response(f"Renewed the {kind} key; read it from {tokens.path}")
