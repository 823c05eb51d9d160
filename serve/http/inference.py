"""The inference API (port 8080): ping, readiness, predictions, explanations, API description.

Also TorchServe's SageMaker-style `/invocations`, `/models/{model}/invoke` and legacy
`/{model}[/{version}]/predict` paths.

A prediction reads top to bottom: resolve the model version, read the body into parameters,
queue one InferenceRequest with the batcher, await its future, write the handler's answer
(or stream its chunks).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web

from handlers.messages import Output, Param
from serve.api.operations import healthy
from serve.api.predict import chunks, predict
from serve.deadline import HEADER_SOURCE, TIMEOUT_HEADER, choose, header_timeout
from serve.errors import BadRequest, InternalError, NotFound, ServeError
from serve.http.common import CONFIG, REGISTRY, json_response, not_found
from serve.http.inputs import read_params
from serve.http.openapi import inference_description
from serve.request import InferenceRequest, new_request_id

logger = logging.getLogger(__name__)

_NO_CACHE = {
    "Cache-Control": "no-cache; no-store, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 UTC",
}
MODEL_VERSION = "X-Model-Version"  # names the version that answered (routed or named)
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


def routes() -> list[web.RouteDef]:
    """Routes of the inference app."""
    return [
        web.route("*", "/ping", ping),
        web.get("/ready", ready),
        web.get("/ready/{model}", ready_model),
        web.get("/ready/{model}/{version}", ready_model),
        web.route("OPTIONS", "/", describe_api),
        web.route("*", "/api-description", describe_api),
        web.route("*", "/predictions/{model}", predictions),
        web.route("*", "/predictions/{model}/{version}", predictions),
        web.route("*", "/predictions/{model}/{version}/{path:.+}", predictions),
        web.route("*", "/explanations/{model}", explanations),
        web.route("*", "/explanations/{model}/{version}", explanations),
        web.route("*", "/invocations", invocations),
        web.route("*", "/models/{model}/invoke", invocations),
        web.route("*", "/{model}/predict", legacy_predict),
        web.route("*", "/{model}/{version}/predict", legacy_predict),
    ]


async def unknown_path(request: web.Request) -> web.StreamResponse:
    """A path this port does not serve; a management path says where the management API is
    (registering on 8080 is the commonest slip after TorchServe's two ports)."""
    path = request.path
    if path == "/models" or path.startswith("/models/"):
        address = request.app[CONFIG].management_address
        raise NotFound(
            f"{request.method} {path} is a management API path: the management API is on "
            f"{address}; this is the inference API"
        )
    return await not_found(request)


async def ping(request: web.Request) -> web.Response:
    """TorchServe's health: Unhealthy (500) when a model has fewer live workers than min."""
    if not healthy(request.app[REGISTRY]):
        return json_response({"status": "Unhealthy"}, 500)
    return json_response({"status": "Healthy"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 when every model version has its min_workers ready, else 503."""
    registry = request.app[REGISTRY]
    models = {
        f"{v.name}/{v.version}": {"ready": v.pool.ready_count, "minWorkers": v.min_workers}
        for m in registry.models.values()
        for v in m.versions.values()
    }
    all_ready = all(m["ready"] >= m["minWorkers"] for m in models.values())
    return json_response(
        {"status": "Ready" if all_ready else "Not ready", "models": models},
        200 if all_ready else 503,
    )


async def ready_model(request: web.Request) -> web.Response:
    """Per-model readiness: 200 when at least one, and min_workers, workers are ready."""
    version = request.app[REGISTRY].get(
        request.match_info["model"], request.match_info.get("version"), routed=False
    )
    body = {
        "modelName": version.name,
        "modelVersion": version.version,
        "ready": version.ready,
        "readyWorkers": version.pool.ready_count,
        "minWorkers": version.min_workers,
    }
    return json_response(body, 200 if version.ready else 503)


async def describe_api(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this server."""
    return json_response(inference_description())


async def predictions(request: web.Request) -> web.StreamResponse:
    """Run one request through its model's batcher and answer with the handler's output."""
    info = request.match_info
    return await _infer(request, info["model"], info.get("version"), explain=False)


async def explanations(request: web.Request) -> web.StreamResponse:
    """As predictions, with the `explain` header set for the handler."""
    info = request.match_info
    return await _infer(request, info["model"], info.get("version"), explain=True)


async def invocations(request: web.Request) -> web.StreamResponse:
    """SageMaker's `/invocations?model_name=M` and `/models/{model}/invoke`: the default version.

    Without a model name, the one model loaded at startup (if there is exactly one). As in
    TorchServe, query parameters reach the handler as inputs, ahead of the body's.
    """
    name = request.match_info.get("model") or request.query.get("model_name")
    if not name:
        models = request.app[REGISTRY].models
        startup = [
            model_name
            for model_name, model in models.items()
            if any(v.loaded_at_startup for v in model.versions.values())
        ]
        if len(startup) != 1:
            raise BadRequest("Parameter model_name is required.")
        name = startup[0]
    return await _infer(request, name, None, explain=False, query_inputs=True)


async def legacy_predict(request: web.Request) -> web.StreamResponse:
    """TorchServe's legacy `/{model}[/{version}]/predict`: query parameters are inputs too."""
    info = request.match_info
    return await _infer(
        request, info["model"], info.get("version"), explain=False, query_inputs=True
    )


async def _infer(
    request: web.Request,
    model: str,
    url_version: str | None,
    *,
    explain: bool,
    query_inputs: bool = False,
) -> web.StreamResponse:
    url_version = url_version or None
    config = request.app[CONFIG]
    key = None if url_version else request.headers.get(config.routing_header)
    version = request.app[REGISTRY].get(model, url_version, key)
    if request.method == "OPTIONS":
        return json_response(inference_description())
    started = time.monotonic()
    client_timeout = header_timeout(request.headers.get(TIMEOUT_HEADER))
    deadline = choose(started, client_timeout, HEADER_SOURCE, config.max_request_time)
    try:
        params = await read_params(request, config.max_request_size)
        if query_inputs and request.query:
            query = tuple(Param(k, "", bytearray(v.encode())) for k, v in request.query.items())
            params = (*query, *params)
        request_id = request_id_of(request)
        headers = (
            *request.headers.items(),
            ("explain", "True" if explain else "False"),
            ("url_path", request.match_info.get("path", "")),
        )
        job = InferenceRequest(
            request_id, params, headers, asyncio.get_running_loop(), deadline=deadline
        )
        output = await predict(version, job, url_version, started)
        if output.final:
            return _response(output, request_id, version.version)
        return await _stream(request, job, output, request_id, version.version)
    except ServeError as error:  # the answer names the version even when it is an error
        error.headers = {**error.headers, MODEL_VERSION: version.version}
        raise


def request_id_of(request: web.Request) -> str:
    """The client's x-request-id when it is usable, else a fresh id."""
    given = request.headers.get("x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return new_request_id()


def _headers(output: Output, request_id: str, model_version: str) -> dict[str, str]:
    headers = dict(_NO_CACHE)
    for key, value in output.headers.items():
        text = str(value)
        if "\r" in text or "\n" in text or "\r" in key or "\n" in key:
            logger.warning("Dropping response header %r: it contains a line break", key)
            continue
        headers[key] = text
    headers["x-request-id"] = request_id
    headers[MODEL_VERSION] = model_version
    if output.content_type:
        headers["Content-Type"] = output.content_type
    return headers


def _status(output: Output) -> tuple[int, str | None]:
    if not 100 <= output.status <= 599:
        raise InternalError(f"The handler set an invalid HTTP status {output.status}")
    reason = output.reason or None
    if reason is not None and ("\r" in reason or "\n" in reason):
        reason = None
    return output.status, reason


def _response(output: Output, request_id: str, model_version: str) -> web.Response:
    status, reason = _status(output)
    headers = _headers(output, request_id, model_version)
    return web.Response(body=output.body, status=status, reason=reason, headers=headers)


async def _stream(
    request: web.Request, job: InferenceRequest, first: Output, request_id: str, model_version: str
) -> web.StreamResponse:
    """Relay a streaming handler's chunks as one chunked HTTP response."""
    status, reason = _status(first)
    headers = _headers(first, request_id, model_version)
    response = web.StreamResponse(status=status, reason=reason, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for item in chunks(job, first):
            await response.write(item.body)
    except ServeError as error:
        logger.warning("Request %s: stream ended by an error: %s", request_id, error.message)
    await response.write_eof()
    return response
