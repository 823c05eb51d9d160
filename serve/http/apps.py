"""Builds the three aiohttp applications over one registry."""

from __future__ import annotations

from aiohttp import web

from serve.config import Config
from serve.http import inference, management, metrics_api
from serve.http.common import CONFIG, METRICS, REGISTRY, errors_middleware
from serve.metrics import ServerMetrics
from serve.models.registry import Registry


def _app(
    config: Config, registry: Registry, metrics: ServerMetrics, routes: list[web.RouteDef]
) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=config.max_request_size)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[METRICS] = metrics
    app.add_routes(routes)
    return app


def inference_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8080: ping, readiness, predictions, explanations."""
    return _app(config, registry, metrics, inference.routes())


def management_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8081: models."""
    return _app(config, registry, metrics, management.routes())


def metrics_app(config: Config, registry: Registry, metrics: ServerMetrics) -> web.Application:
    """Port 8082: /metrics."""
    return _app(config, registry, metrics, metrics_api.routes())
