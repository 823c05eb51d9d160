"""The management API (port 8081): list, register, describe, scale, set-default, unregister."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from handlers.messages import Param
from serve.batching.request import InferenceRequest
from serve.errors import BadRequest, MethodNotAllowed, ServiceUnavailable
from serve.http.common import (
    CONFIG,
    REGISTRY,
    bool_param,
    check_known,
    float_param,
    int_param,
    json_response,
    status_response,
    str_param,
)
from serve.http.openapi import api_description
from serve.models.registry import RegisterParams, Registry
from serve.models.version import STARTUP_TIMEOUT, ModelVersion

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
    return json_response(api_description())


async def list_models(request: web.Request) -> web.Response:
    """Default versions sorted by name, paged by an integer offset token."""
    query = request.query
    check_known(query, LIST_PARAMS)
    limit = int_param(query, "limit")
    if limit is None or limit < 0 or limit > 100:
        limit = 100
    offset = int_param(query, "next_page_token", minimum=0) or 0
    versions = request.app[REGISTRY].default_versions()
    page = versions[offset : offset + limit]
    body: dict[str, Any] = {}
    if offset + limit < len(versions):
        body["nextPageToken"] = str(offset + limit)
    body["models"] = [{"modelName": v.name, "modelUrl": v.url} for v in page]
    return json_response(body)


async def register(request: web.Request) -> web.Response:
    """Register an archive from the model store (405 unless enable_model_api)."""
    if not request.app[CONFIG].enable_model_api:
        raise MethodNotAllowed(
            "Model API is disabled: start the server with --enable-model-api "
            "(or enable_model_api: true) to register models"
        )
    params = register_params(await _register_values(request))
    result = await request.app[REGISTRY].register(params)
    version = result.version
    if not params.synchronous:
        return status_response("Processing worker updates...", 202)
    if result.workers == 0:
        return status_response(
            f'Model "{version.name}" Version: {version.version} registered with 0 initial workers. '
            "Use scale workers API to add workers for the model."
        )
    return status_response(
        f'Model "{version.name}" Version: {version.version} registered with '
        f"{result.workers} initial workers"
    )


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


def register_params(values: Mapping[str, Any]) -> RegisterParams:
    """Validated registration parameters (shared by REST and gRPC)."""
    url = str_param(values, "url")
    if url is None:
        raise BadRequest("Parameter url is required.")
    runtime = str_param(values, "runtime")
    if runtime is not None and runtime not in ("python", "python3"):
        raise BadRequest(f"Invalid runtime {runtime!r}: only python is supported")
    return RegisterParams(
        url=url,
        model_name=str_param(values, "model_name"),
        handler=str_param(values, "handler"),
        batch_size=int_param(values, "batch_size", minimum=1),
        max_batch_delay=int_param(values, "max_batch_delay", minimum=0),
        initial_workers=int_param(values, "initial_workers", minimum=0),
        response_timeout=float_param(values, "response_timeout", 0),
        synchronous=bool_param(values, "synchronous", True),
        startup_timeout=float_param(values, "startup_timeout", 0) or STARTUP_TIMEOUT,
    )


async def describe(request: web.Request) -> web.Response:
    """Describe the default version, one version, or `all` versions (a JSON array)."""
    check_known(request.query, DESCRIBE_PARAMS)
    registry = request.app[REGISTRY]
    name = request.match_info["model"]
    version = request.match_info.get("version")
    customized = bool_param(request.query, "customized", False)
    versions = registry.versions(name) if version == "all" else [registry.get(name, version)]
    bodies = []
    for v in versions:
        body = v.describe()
        if customized and version != "all":
            body["customizedMetadata"] = await _customized(v)
        bodies.append(body)
    return json_response(bodies)


async def _customized(version: ModelVersion) -> Any:
    """Ask the handler's describe_handle() through a worker, as TorchServe does."""
    if version.pool.ready_count == 0:
        raise ServiceUnavailable(
            f'Model "{version.name}" has no worker to serve describe request. '
            "Please use scale workers API to add workers."
        )
    job = InferenceRequest(
        "describe",
        (Param("body", "", bytearray()),),
        (("describe", "True"),),
        asyncio.get_running_loop(),
    )
    version.batcher.submit(job)
    output = await job.future
    try:
        return orjson.loads(output.body)
    except orjson.JSONDecodeError:
        return output.body.decode("utf-8", "replace")


async def scale(request: web.Request) -> web.Response:
    """Set a version's worker count; with synchronous=true, wait for it."""
    query = request.query
    check_known(query, SCALE_PARAMS)
    registry = request.app[REGISTRY]
    name = request.match_info["model"]
    version_name = request.match_info.get("version") or str_param(query, "model_version")
    version = registry.get(name, version_name)
    min_workers = int_param(query, "min_worker", minimum=0)
    min_workers = 1 if min_workers is None else min_workers
    max_workers = int_param(query, "max_worker", minimum=0)
    max_workers = min_workers if max_workers is None else max_workers
    if max_workers < min_workers:
        raise BadRequest("max_worker cannot be less than min_worker.")
    synchronous = bool_param(query, "synchronous", False)
    reached = await version.scale(
        min_workers, max_workers, wait=STARTUP_TIMEOUT if synchronous else None
    )
    if not synchronous:
        return status_response("Processing worker updates...", 202)
    if not reached:
        return status_response("Workers scaling in progress...", 206)
    which = f"model: {name}" + (f", version: {version_name}" if version_name else "")
    return status_response(f"Workers scaled to {min_workers} for {which}")


async def set_default(request: web.Request) -> web.Response:
    """Make a version the default one."""
    name = request.match_info["model"]
    version = request.match_info["version"]
    request.app[REGISTRY].set_default(name, version)
    return status_response(
        f'Default version successfully updated for model "{name}" to "{version}"'
    )


async def unregister(request: web.Request) -> web.Response:
    """Remove a version (405 unless enable_model_api); queued requests drain first."""
    if not request.app[CONFIG].enable_model_api:
        raise MethodNotAllowed(
            "Model API is disabled: start the server with --enable-model-api "
            "(or enable_model_api: true) to unregister models"
        )
    name = request.match_info["model"]
    registry: Registry = request.app[REGISTRY]
    await registry.unregister(name, request.match_info.get("version"))
    return status_response(f'Model "{name}" unregistered')


async def kserve_ready(request: web.Request) -> web.Response:
    """KServe v1 readiness of a model's default version."""
    version = request.app[REGISTRY].get(request.match_info["model"])
    return json_response({"name": version.name, "ready": version.pool.ready_count > 0})
