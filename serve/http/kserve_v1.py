"""KServe's v1 protocol on the inference port: predict, explain, model readiness, model list.

`{"instances": [...]}` becomes one InferenceRequest whose instances are entries of the
handler's batch (as TorchServe's `kserve` envelope hands them), so instances of concurrent
requests share batches up to batch_size; the answer holds this request's predictions only.
Without a version in the path, predict and explain go where the model's traffic split sends
them (sticky by the routing header) and answer `X-Model-Version`; readiness describes the
default version. `X-Request-Timeout` bounds a request as on /predictions.
"""

from __future__ import annotations

from aiohttp import web

from handlers.wire import Instances
from serve.api.generation import model_entry, model_list
from serve.api.infer import Call, infer
from serve.deadline import TIMEOUT_HEADER
from serve.errors import BadRequest, ServeError
from serve.http.common import CONFIG, MODEL_VERSION, REGISTRY
from serve.http.inputs import read_body
from serve.http.kserve_common import json_reply, oip_errors, parse_json

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
    """The registered models, by name (plus OpenAI's list when generative models are
    registered: the OpenAI door shares this path)."""
    registry = request.app[REGISTRY]
    body: dict[str, object] = {"models": sorted(registry.models)}
    openai = model_list(registry)
    if openai["data"]:
        body.update(openai)
    return json_reply(body)


async def ready_v1(request: web.Request) -> web.StreamResponse:
    """`{"name", "ready"}`: 200 when the default version has its minimum workers, else 503
    (a generative model's answer is OpenAI's model object too)."""
    model_id = request.match_info["model"]
    # an OpenAI id `name/version` arrives here with its slash encoded (%2F)
    name, _, named = model_id.partition("/")
    version = request.app[REGISTRY].version(name, named or None)
    body = {"name": version.name, "ready": version.ready}
    if version.generative:
        body.update(model_entry(model_id))
    return json_reply(body, 200 if version.ready else 503)


async def _infer(request: web.Request, *, explain: bool) -> web.StreamResponse:
    config = request.app[CONFIG]

    async def instances() -> Instances:
        raw = await read_body(request, config.max_request_size)
        body = parse_json(raw, "The body", V1_HINT)
        found = body.get("instances")
        if not isinstance(found, list) or not found:
            raise BadRequest(f'The body must hold "instances": a non-empty list; {V1_HINT}')
        return Instances(found, explain)

    headers = request.headers
    call = Call(
        model=request.match_info["model"],
        version=None,
        routing_key=headers.get(config.routing_header),
        payload=instances,
        client_request_id=headers.get("x-request-id"),
        headers=tuple(headers.items()),
        timeout_header=headers.get(TIMEOUT_HEADER),
        explain=explain,
    )
    answer = await infer(request.app[REGISTRY], call)
    with answer.naming():
        output = await answer.last()  # the protocol answers once
        if output.status >= 400:
            raise ServeError(output.body.decode("utf-8", errors="replace"), status=output.status)
    return web.Response(
        body=output.body,
        status=output.status,
        content_type="application/json",
        headers={
            "x-request-id": answer.request_id,
            **output.headers,
            MODEL_VERSION: answer.version.version,
        },
    )
