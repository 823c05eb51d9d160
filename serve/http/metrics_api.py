"""The metrics API (port 8082): Prometheus text exposition, no token needed."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from serve.http.common import METRICS, REGISTRY


def routes() -> list[web.RouteDef]:
    """Routes of the metrics app."""
    return [web.get("/metrics", metrics)]


async def metrics(request: web.Request) -> web.Response:
    """All metrics, or only those named by `name[]` query parameters."""
    names = request.query.getall("name[]", [])
    metrics = request.app[METRICS]
    host = await asyncio.to_thread(metrics.host.read)  # /proc and NVML: off the loop
    executors = [
        (version, executor)
        for model in request.app[REGISTRY].models.values()
        for version in model.versions.values()
        for executor in version.pool.executors
    ]
    loads = [
        (f"W-{executor.id}-{version.name}_{version.version}", executor.load_seconds * 1000)
        for version, executor in executors
        if executor.load_seconds is not None
    ]
    # TorchServe's WorkerThreadTime is one host gauge, set by whichever worker ran last
    timed = [e for _, e in executors if e.thread_seconds is not None]
    newest = max(timed, key=lambda e: e.thread_at, default=None)
    thread_ms = (
        newest.thread_seconds * 1000 if newest and newest.thread_seconds is not None else None
    )
    body = metrics.render(names, host=host, worker_loads=loads, worker_thread_ms=thread_ms)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
