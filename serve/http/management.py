"""The management API (port 8081): list, register, describe, scale, set-default, unregister.

The operations themselves live in `serve.api.operations` (shared with gRPC); this module
reads parameters from the HTTP request and renders the replies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from serve.api import operations
from serve.api.operations import Reply
from serve.api.params import check_known
from serve.errors import BadRequest
from serve.http.common import CONFIG, REGISTRY, json_response, status_response
from serve.http.openapi import management_description

logger = logging.getLogger(__name__)

REGISTER_PARAMS = frozenset(
    {
        "url",
        "model_name",
        "handler",
        "runtime",
        "batch_size",
        "max_batch_delay",
        "initial_workers",
        "synchronous",
        "response_timeout",
        "startup_timeout",
        "s3_sse_kms",
    }
)
SCALE_PARAMS = frozenset(
    {"min_worker", "max_worker", "synchronous", "model_version", "number_gpu", "timeout"}
)
LIST_PARAMS = frozenset({"limit", "next_page_token"})
DESCRIBE_PARAMS = frozenset({"customized"})


def routes() -> list[web.RouteDef]:
    """Routes of the management app."""
    return [
        web.route("OPTIONS", "/", describe_api),
        web.get("/models", list_models),
        web.post("/models", register),
        # before /models/{model}/{version}: "traffic" is not a version here
        web.get("/models/{model}/traffic", get_traffic),
        web.put("/models/{model}/traffic", set_traffic),
        web.delete("/models/{model}/traffic", clear_traffic),
        web.get("/models/{model}", describe),
        web.get("/models/{model}/{version}", describe),
        web.put("/models/{model}", scale),
        web.put("/models/{model}/{version}", scale),
        web.put("/models/{model}/{version}/set-default", set_default),
        web.delete("/models/{model}", unregister),
        web.delete("/models/{model}/{version}", unregister),
        web.route("OPTIONS", "/models/{model}", describe_api),
        web.route("OPTIONS", "/models/{model}/{version}", describe_api),
        web.get("/v1/models/{model}", kserve_ready),
    ]


async def describe_api(request: web.Request) -> web.Response:
    """The OpenAPI document."""
    return json_response(management_description())


async def list_models(request: web.Request) -> web.Response:
    """Default versions sorted by name, paged by an integer offset token."""
    check_known(request.query, LIST_PARAMS)
    return json_response(operations.list_models(request.app[REGISTRY], request.query))


async def register(request: web.Request) -> web.Response:
    """Register an archive from the model store (405 unless enable_model_api)."""
    operations.check_model_api(request.app[CONFIG], "register")
    params = operations.register_params(await _register_values(request))
    return _reply(await operations.register(request.app[REGISTRY], params))


async def _register_values(request: web.Request) -> Mapping[str, Any]:
    values: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json" and request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise BadRequest("The JSON request body must be an object of parameters")
            values.update(body)
    check_known(values, REGISTER_PARAMS)
    return values


async def describe(request: web.Request) -> web.Response:
    """Describe the default version, one version, or `all` versions (a JSON array)."""
    check_known(request.query, DESCRIBE_PARAMS)
    info = request.match_info
    bodies = await operations.describe(
        request.app[REGISTRY], info["model"], info.get("version"), request.query
    )
    return json_response(bodies)


async def scale(request: web.Request) -> web.Response:
    """Set a version's worker count; with synchronous=true, wait for it."""
    check_known(request.query, SCALE_PARAMS)
    info = request.match_info
    return _reply(
        await operations.scale(
            request.app[REGISTRY], info["model"], info.get("version"), request.query
        )
    )


async def set_default(request: web.Request) -> web.Response:
    """Make a version the default one."""
    info = request.match_info
    return _reply(operations.set_default(request.app[REGISTRY], info["model"], info["version"]))


async def get_traffic(request: web.Request) -> web.Response:
    """The model's traffic split, in the shape PUT takes."""
    return json_response(operations.get_traffic(request.app[REGISTRY], request.match_info["model"]))


async def set_traffic(request: web.Request) -> web.Response:
    """Set the split from a JSON body: `{"1.0": 90, "2.0": 10, "shadow": {"2.0": 25}}`."""
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The traffic split must be a JSON object: {exc}") from exc
    return _reply(operations.set_traffic(request.app[REGISTRY], request.match_info["model"], body))


async def clear_traffic(request: web.Request) -> web.Response:
    """Remove the split: the default version takes all unversioned traffic again."""
    return _reply(operations.clear_traffic(request.app[REGISTRY], request.match_info["model"]))


async def unregister(request: web.Request) -> web.Response:
    """Remove a version (405 unless enable_model_api); queued requests drain first."""
    operations.check_model_api(request.app[CONFIG], "unregister")
    info = request.match_info
    return _reply(
        await operations.unregister(request.app[REGISTRY], info["model"], info.get("version"))
    )


def _reply(reply: Reply) -> web.Response:
    return status_response(reply.message, reply.status)


async def kserve_ready(request: web.Request) -> web.Response:
    """KServe v1 readiness of a model's default version."""
    version = request.app[REGISTRY].version(request.match_info["model"])
    return json_response({"name": version.name, "ready": version.ready})
