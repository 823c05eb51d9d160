"""The inference API (port 8080): ping, readiness, predictions, explanations, API description.

Also TorchServe's SageMaker-style `/invocations`, `/models/{model}/invoke` and legacy
`/{model}[/{version}]/predict` paths.

A prediction parses the request into one Call for the inference path (serve.api.infer; the
body is read into parameters once the version is chosen) and writes the handler's answer
(or streams its chunks).
"""

from __future__ import annotations

import logging

from aiohttp import web

from handlers.messages import Output, Param
from serve.api.health import healthy, readiness, server_ready
from serve.api.infer import Answer, Call, infer
from serve.deadline import TIMEOUT_HEADER
from serve.errors import BadRequest, InternalError, NotFound, ServeError
from serve.http.common import CONFIG, MODEL_VERSION, REGISTRY, json_response, not_found
from serve.http.inputs import read_params
from serve.http.openapi import inference_description
from serve.request import SEQUENCE_HEADER

logger = logging.getLogger(__name__)

_NO_CACHE = {
    "Cache-Control": "no-cache; no-store, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 UTC",
}


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
    """Readiness: 200 when every model version that asks for workers has them, else 503."""
    registry = request.app[REGISTRY]
    models = readiness(registry)
    all_ready = server_ready(registry)
    return json_response(
        {"status": "Ready" if all_ready else "Not ready", "models": models},
        200 if all_ready else 503,
    )


async def ready_model(request: web.Request) -> web.Response:
    """Per-model readiness: 200 when at least one, and min_workers, workers are ready."""
    version = request.app[REGISTRY].version(
        request.match_info["model"], request.match_info.get("version")
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
    registry, config = request.app[REGISTRY], request.app[CONFIG]
    if request.method == "OPTIONS":
        registry.version(model, url_version)  # an unknown model is still a 404
        return json_response(inference_description())

    async def params() -> tuple[Param, ...]:
        read = await read_params(request, config.max_request_size)
        if query_inputs and request.query:
            query = tuple(Param(k, "", bytearray(v.encode())) for k, v in request.query.items())
            return (*query, *read)
        return read

    headers = request.headers
    call = Call(
        model=model,
        version=url_version or None,
        routing_key=headers.get(config.routing_header),
        payload=params,
        client_request_id=headers.get("x-request-id"),
        headers=tuple(headers.items()),
        timeout_header=headers.get(TIMEOUT_HEADER),
        explain=explain,
        url_path=request.match_info.get("path", ""),
        sequence_id=headers.get(SEQUENCE_HEADER) or None,
    )
    answer = await infer(registry, call)
    with answer.naming():
        if answer.first.final:
            return _response(answer.first, answer.request_id, answer.version.version)
        return await _stream(request, answer)


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


async def _stream(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Relay a streaming handler's chunks as one chunked HTTP response."""
    status, reason = _status(answer.first)
    headers = _headers(answer.first, answer.request_id, answer.version.version)
    response = web.StreamResponse(status=status, reason=reason, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for item in answer.chunks():
            await response.write(item.body)
    except ServeError as error:
        logger.warning("Request %s: stream ended by an error: %s", answer.request_id, error.message)
    await response.write_eof()
    return response
