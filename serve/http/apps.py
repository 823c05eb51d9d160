"""Builds the three aiohttp applications over one registry."""

from __future__ import annotations

from aiohttp import web

from serve.config import Config
from serve.http import inference, management, metrics_api
from serve.http.common import (
    CONFIG,
    METRICS,
    REGISTRY,
    json_errors,
    method_not_allowed,
    not_found,
)
from serve.metrics import ServerMetrics
from serve.models.registry import Registry


def _app(
    config: Config, registry: Registry, metrics: ServerMetrics, routes: list[web.RouteDef]
) -> web.Application:
    app = web.Application(client_max_size=config.max_request_size)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[METRICS] = metrics
    app.add_routes(with_json_errors(routes))
    return app


def with_json_errors(routes: list[web.RouteDef]) -> list[web.RouteDef]:
    """Every route guarded by `json_errors`, plus JSON 405s for other methods on known paths
    and a JSON 404 for unknown paths (what a middleware would do, without its per-request cost)."""
    guarded = [web.route(r.method, r.path, json_errors(r.handler), **r.kwargs) for r in routes]
    paths = list(dict.fromkeys(r.path for r in routes))
    open_paths = {r.path for r in routes if r.method == "*"}
    fallbacks = [
        web.route("*", path, json_errors(method_not_allowed))
        for path in paths
        if path not in open_paths
    ]
    return [*guarded, *fallbacks, web.route("*", "/{tail:.*}", json_errors(not_found))]


def inference_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8080: ping, readiness, predictions, explanations."""
    return _app(config, registry, metrics, inference.routes())


def management_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8081: models."""
    return _app(config, registry, metrics, management.routes())


def metrics_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8082: /metrics."""
    return _app(config, registry, metrics, metrics_api.routes())
