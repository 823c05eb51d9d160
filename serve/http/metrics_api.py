"""The metrics API (port 8082): Prometheus text exposition, no token needed."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from serve.http.common import METRICS


def routes() -> list[web.RouteDef]:
    """Routes of the metrics app."""
    return [web.get("/metrics", metrics)]


async def metrics(request: web.Request) -> web.Response:
    """All metrics, or only those named by `name[]` query parameters."""
    names = request.query.getall("name[]", [])
    body = request.app[METRICS].render(names)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
