"""Builds the three aiohttp applications over one registry."""

from __future__ import annotations

from aiohttp import web

from serve.config import Config
from serve.errors import MethodNotAllowed
from serve.frontend_metrics import StatusCounts
from serve.http import inference, management, metrics_api
from serve.http.common import (
    CONFIG,
    METRICS,
    REGISTRY,
    Handler,
    json_errors,
    not_found,
)
from serve.metrics import ServerMetrics
from serve.models.registry import Registry


def _app(
    config: Config,
    registry: Registry,
    metrics: ServerMetrics,
    routes: list[web.RouteDef],
    statuses: StatusCounts | None,
) -> web.Application:
    app = web.Application(client_max_size=config.max_request_size)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[METRICS] = metrics
    app.add_routes(with_json_errors(routes, statuses))
    return app


def with_json_errors(
    routes: list[web.RouteDef], statuses: StatusCounts | None = None
) -> list[web.RouteDef]:
    """Every route guarded by `json_errors`, plus JSON 405s for other methods on known paths
    and a JSON 404 for unknown paths (what a middleware would do, without its per-request cost).
    `statuses` counts every response of these routes by status class."""

    def guard(handler: Handler) -> Handler:
        return json_errors(handler, statuses)

    guarded = [web.route(r.method, r.path, guard(r.handler), **r.kwargs) for r in routes]
    allowed: dict[str, list[str]] = {}
    for r in routes:
        methods = allowed.setdefault(r.path, [])
        methods += [r.method, "HEAD"] if r.method == "GET" else [r.method]
    fallbacks = [
        web.route("*", path, guard(_not_allowed(methods)))
        for path, methods in allowed.items()
        if "*" not in methods
    ]
    return [*guarded, *fallbacks, web.route("*", "/{tail:.*}", guard(not_found))]


def _not_allowed(methods: list[str]) -> Handler:
    """A 405 that names the path's methods in `Allow`, as RFC 9110 asks."""
    allow = ", ".join(dict.fromkeys(methods))

    async def handler(request: web.Request) -> web.StreamResponse:
        raise MethodNotAllowed(
            "Requested method is not allowed, please refer to API document.",
            headers={"Allow": allow},
        )

    return handler


def inference_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8080: ping, readiness, predictions, explanations."""
    return _app(config, registry, metrics, inference.routes(), metrics.statuses)


def management_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8081: models."""
    return _app(config, registry, metrics, management.routes(), metrics.statuses)


def metrics_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8082: /metrics."""
    return _app(config, registry, metrics, metrics_api.routes(), None)
