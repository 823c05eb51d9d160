"""Builds the three aiohttp applications over one registry."""

from __future__ import annotations

from aiohttp import web

from serve.config import Config
from serve.frontend_metrics import StatusCounts
from serve.http import inference, kserve_v1, management, metrics_api, oip
from serve.http.common import (
    CONFIG,
    METRICS,
    REGISTRY,
    Handler,
    json_errors,
    method_not_allowed,
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
    paths = list(dict.fromkeys(r.path for r in routes))
    open_paths = {r.path for r in routes if r.method == "*"}
    fallbacks = [
        web.route("*", path, guard(method_not_allowed)) for path in paths if path not in open_paths
    ]
    return [*guarded, *fallbacks, web.route("*", "/{tail:.*}", guard(not_found))]


def inference_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8080: ping, readiness, predictions, explanations, KServe v1 and OIP v2."""
    routes = [*inference.routes(), *kserve_v1.routes(), *oip.routes()]
    return _app(config, registry, metrics, routes, metrics.statuses)


def management_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8081: models."""
    return _app(config, registry, metrics, management.routes(), metrics.statuses)


def metrics_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8082: /metrics."""
    return _app(config, registry, metrics, metrics_api.routes(), None)
