"""Builds the aiohttp applications over one registry, each route guarded once (errors, keys)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from serve.auth.keys import Kind, Tokens
from serve.auth.public import key_for_path
from serve.config import Config
from serve.errors import MethodNotAllowed
from serve.http import inference, kserve_v1, management, metrics_api, oip, openai, tokens_api
from serve.http.common import (
    CONFIG,
    GUARDED,
    METRICS,
    REGISTRY,
    TOKENS,
    Handler,
    json_errors,
    not_found,
)
from serve.models.registry import Registry
from serve.telemetry.metrics import ServerMetrics
from serve.telemetry.torchserve import StatusCounts

# Which keys open a route template (any one of them does); () for a public route.
KeyRule = Callable[[str], tuple[Kind, ...]]
CATCH_ALL = "/{tail:.*}"


def _app(
    config: Config,
    registry: Registry,
    metrics: ServerMetrics,
    routes: list[web.RouteDef],
    statuses: StatusCounts | None,
    auth: tuple[Tokens, KeyRule] | None = None,
    fallback: Handler = not_found,
) -> web.Application:
    app = web.Application(client_max_size=config.max_request_size)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[METRICS] = metrics
    if auth is not None:
        app[TOKENS] = auth[0]
    app.add_routes(with_json_errors(routes, statuses, auth, fallback))
    app.on_startup.append(_all_guarded)
    return app


def with_json_errors(
    routes: list[web.RouteDef],
    statuses: StatusCounts | None = None,
    auth: tuple[Tokens, KeyRule] | None = None,
    fallback: Handler = not_found,
) -> list[web.RouteDef]:
    """Every route guarded by `json_errors`, plus JSON 405s for other methods on known paths
    and a JSON 404 for unknown paths (`fallback`; what a middleware would do, without its
    per-request cost).
    `statuses` counts every response of these routes by status class. With `auth` (the keys
    and the rule naming each route's key), every route but the public ones (serve.auth.public)
    needs its key, the unknown-path 404 included, so a route added later is covered by default."""

    def guard(handler: Handler, path: str) -> Handler:
        kinds = () if auth is None else auth[1](path)
        if auth is None or not kinds:
            return json_errors(handler, statuses)
        return json_errors(handler, statuses, (auth[0].checker(*kinds), " or ".join(kinds)))

    guarded = [web.route(r.method, r.path, guard(r.handler, r.path), **r.kwargs) for r in routes]
    allowed: dict[str, list[str]] = {}
    for r in routes:
        methods = allowed.setdefault(r.path, [])
        methods += [r.method, "HEAD"] if r.method == "GET" else [r.method]
    fallbacks = [
        web.route("*", path, guard(_not_allowed(methods), path))
        for path, methods in allowed.items()
        if "*" not in methods
    ]
    return [*guarded, *fallbacks, web.route("*", CATCH_ALL, guard(fallback, CATCH_ALL))]


def _not_allowed(methods: list[str]) -> Handler:
    """A 405 that names the path's methods in `Allow`, as RFC 9110 asks."""
    allow = ", ".join(dict.fromkeys(methods))

    async def handler(request: web.Request) -> web.StreamResponse:
        raise MethodNotAllowed(
            "Requested method is not allowed, please refer to API document.",
            headers={"Allow": allow},
        )

    return handler


async def _all_guarded(app: web.Application) -> None:
    """Refuse to start an app with a route that skips the guard (and so the token check)."""
    for route in app.router.routes():
        if route.handler not in GUARDED:
            info = route.resource.canonical if route.resource is not None else "?"
            raise RuntimeError(
                f"route {route.method} {info} is not guarded: add it through with_json_errors"
            )


def _one(kind: Kind) -> KeyRule:
    """Every route takes `kind`'s key, but the public ones and those PATH_KEYS names."""

    def rule(path: str) -> tuple[Kind, ...]:
        found = key_for_path(path, kind)
        return () if found is None else (found,)

    return rule


def _auth(tokens: Tokens | None, rule: KeyRule) -> tuple[Tokens, KeyRule] | None:
    return None if tokens is None else (tokens, rule)


def inference_app(
    config: Config, registry: Registry, metrics: ServerMetrics, tokens: Tokens | None = None
) -> web.Application:
    """Port 8080: ping, readiness, predictions, explanations, KServe v1 and OIP v2 (the
    inference key)."""
    auth = _auth(tokens, _one("inference"))
    routes = _inference_routes()
    return _app(config, registry, metrics, routes, metrics.statuses, auth, inference.unknown_path)


def _inference_routes() -> list[web.RouteDef]:
    return [*inference.routes(), *kserve_v1.routes(), *oip.routes(), *openai.routes()]


def _management_routes() -> list[web.RouteDef]:
    return [*management.routes(), *tokens_api.routes()]


def management_app(
    config: Config, registry: Registry, metrics: ServerMetrics, tokens: Tokens | None = None
) -> web.Application:
    """Port 8081: models (the management key), and /token (the API key)."""
    auth = _auth(tokens, _one("management"))
    return _app(config, registry, metrics, _management_routes(), metrics.statuses, auth)


def metrics_app(
    config: Config, registry: Registry, metrics: ServerMetrics, tokens: Tokens | None = None
) -> web.Application:
    """Port 8082: /metrics, open to anyone who can reach the port (as TorchServe's)."""
    return _app(config, registry, metrics, metrics_api.routes(), None)


def api_app(
    config: Config, registry: Registry, metrics: ServerMetrics, tokens: Tokens | None = None
) -> web.Application:
    """Inference and management on one port (both addresses the same, as KServe configures).

    Each route keeps its own API's key; a path neither serves takes either key."""
    # the inference routes go first: `/models/{model}/invoke` must not be taken for a version
    inference_routes = _inference_routes()
    shared = {(r.method, r.path) for r in inference_routes}
    routes = [r for r in _management_routes() if (r.method, r.path) not in shared]
    inference_paths = {r.path for r in inference_routes}
    management_paths = {r.path for r in routes}

    def rule(path: str) -> tuple[Kind, ...]:
        if path in inference_paths:
            return _one("inference")(path)
        if path in management_paths:
            return _one("management")(path)
        return ("inference", "management")

    auth = _auth(tokens, rule)
    return _app(config, registry, metrics, inference_routes + routes, metrics.statuses, auth)
