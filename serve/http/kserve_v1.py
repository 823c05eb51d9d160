"""KServe's v1 protocol on the inference port: predict, explain, model readiness, model list.

`{"instances": [...]}` becomes one InferenceRequest whose instances are entries of the
handler's batch (as TorchServe's `kserve` envelope hands them), so instances of concurrent
requests share batches up to batch_size; the answer holds this request's predictions only.
Without a version in the path, predict and explain go where the model's traffic split sends
them (sticky by the routing header) and answer `X-Model-Version`; readiness describes the
default version. `X-Request-Timeout` bounds a request as on /predictions.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from handlers.wire import KIND_V1, Instances
from serve.api.predict import chunks, predict
from serve.deadline import HEADER_SOURCE, TIMEOUT_HEADER, choose, header_timeout
from serve.errors import BadRequest, ServeError
from serve.http.common import CONFIG, REGISTRY
from serve.http.inference import MODEL_VERSION, request_id_of
from serve.http.inputs import read_body
from serve.http.kserve_common import json_reply, oip_errors, parse_json
from serve.request import InferenceRequest

# TorchServe's handlers read an instance's "data" (its VisionHandler base64-decodes a string).
V1_HINT = (
    'send JSON {"instances": [...]}, one entry per input; an image as '
    '{"instances": [{"data": "<base64 of the file>"}]}'
)


def routes() -> list[web.RouteDef]:
    """KServe v1 routes of the inference app."""
    return [
        web.post("/v1/models/{model}:predict", oip_errors(predict_v1)),
        web.post("/v1/models/{model}:explain", oip_errors(explain_v1)),
        web.get("/v1/models", oip_errors(list_v1)),
        web.get("/v1/models/{model}", oip_errors(ready_v1)),
    ]


async def predict_v1(request: web.Request) -> web.StreamResponse:
    """`{"instances": [...]}` → `{"predictions": [...]}`, one prediction per instance."""
    return await _infer(request, explain=False)


async def explain_v1(request: web.Request) -> web.StreamResponse:
    """As predict, with the handler's `explain` header set; answers `{"explanations": [...]}`."""
    return await _infer(request, explain=True)


async def list_v1(request: web.Request) -> web.StreamResponse:
    """The registered models, by name."""
    return json_reply({"models": sorted(request.app[REGISTRY].models)})


async def ready_v1(request: web.Request) -> web.StreamResponse:
    """`{"name", "ready"}`: 200 when the default version has its minimum workers, else 503."""
    version = request.app[REGISTRY].get(request.match_info["model"], routed=False)
    return json_reply({"name": version.name, "ready": version.ready}, 200 if version.ready else 503)


async def _infer(request: web.Request, *, explain: bool) -> web.StreamResponse:
    config = request.app[CONFIG]
    key = request.headers.get(config.routing_header)
    version = request.app[REGISTRY].get(request.match_info["model"], None, key)
    started = time.monotonic()
    try:
        client_timeout = header_timeout(request.headers.get(TIMEOUT_HEADER))
        deadline = choose(started, client_timeout, HEADER_SOURCE, config.max_request_time)
        raw = await read_body(request, config.max_request_size)
        body = parse_json(raw, "The body", V1_HINT)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise BadRequest(f'The body must hold "instances": a non-empty list; {V1_HINT}')
        rid = request_id_of(request)
        headers = (*request.headers.items(), ("explain", "True" if explain else "False"))
        job = InferenceRequest(
            rid,
            (),
            headers,
            asyncio.get_running_loop(),
            kind=KIND_V1,
            payload=Instances(instances, explain),
            items=len(instances),
            deadline=deadline,
        )
        output = await predict(version, job, None, started)
        if not output.final:  # the protocol answers once: wait for the handler's final answer
            async for item in chunks(job, output):
                output = item
        if output.status >= 400:
            raise ServeError(output.body.decode("utf-8", errors="replace"), status=output.status)
    except ServeError as error:  # the answer names the version even when it is an error
        error.headers = {**error.headers, MODEL_VERSION: version.version}
        raise
    return web.Response(
        body=output.body,
        status=output.status,
        content_type="application/json",
        headers={"x-request-id": rid, **output.headers, MODEL_VERSION: version.version},
    )
