"""The Open Inference Protocol (KServe v2) over REST on the inference port.

Health, server and model metadata, model readiness and inference, with and without
`/versions/{v}`. Inference takes JSON tensors and the binary tensor extension
(`Inference-Header-Content-Length`: the JSON header, then each binary input in order) and
answers the same way, per output as the client asks (`binary_data`, `binary_data_output`).
Inference without a version follows the model's traffic split (sticky by the routing header)
and answers `X-Model-Version`; metadata and readiness describe the default version.
`X-Request-Timeout` bounds a request as on /predictions.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from handlers.wire import TensorRequest, WireTensor
from serve.api.health import server_ready
from serve.api.infer import Call
from serve.api.infer import infer as infer_call
from serve.api.oip import answer_tensors, model_metadata, server_metadata
from serve.deadline import TIMEOUT_HEADER
from serve.errors import BadRequest
from serve.http.common import CONFIG, MODEL_VERSION, REGISTRY
from serve.http.inputs import read_body
from serve.http.kserve_common import json_reply, oip_errors, parse_json
from serve.models import tensors
from serve.models.version import ModelVersion

HEADER_LENGTH = "Inference-Header-Content-Length"


def routes() -> list[web.RouteDef]:
    """OIP routes of the inference app."""
    return [
        web.get("/v2", oip_errors(metadata)),
        web.get("/v2/health/live", oip_errors(live)),
        web.get("/v2/health/ready", oip_errors(ready)),
        web.get("/v2/models/{model}", oip_errors(model)),
        web.get("/v2/models/{model}/versions/{version}", oip_errors(model)),
        web.get("/v2/models/{model}/ready", oip_errors(model_ready)),
        web.get("/v2/models/{model}/versions/{version}/ready", oip_errors(model_ready)),
        web.post("/v2/models/{model}/infer", oip_errors(infer)),
        web.post("/v2/models/{model}/versions/{version}/infer", oip_errors(infer)),
        web.post("/v2/models/{model}/explain", oip_errors(explain)),
        web.post("/v2/models/{model}/versions/{version}/explain", oip_errors(explain)),
    ]


async def metadata(request: web.Request) -> web.StreamResponse:
    """Server name, version and protocol extensions."""
    return json_reply(server_metadata())


async def live(request: web.Request) -> web.StreamResponse:
    """The server answers: it is live."""
    return json_reply({"live": True})


async def ready(request: web.Request) -> web.StreamResponse:
    """Ready (200) when every model version that asks for workers has them, else 503."""
    is_ready = server_ready(request.app[REGISTRY])
    return json_reply({"ready": is_ready}, 200 if is_ready else 503)


def _version(request: web.Request) -> ModelVersion:
    """The named version, else the default one (metadata ignores the traffic split)."""
    info = request.match_info
    return request.app[REGISTRY].version(info["model"], info.get("version"))


async def model(request: web.Request) -> web.StreamResponse:
    """Name, versions, platform, and the declared inputs and outputs."""
    version = _version(request)
    return json_reply(model_metadata(request.app[REGISTRY], version))


async def model_ready(request: web.Request) -> web.StreamResponse:
    """200 when the version has its minimum workers ready, else 503."""
    version = _version(request)
    return json_reply(
        {"name": version.name, "version": version.version, "ready": version.ready},
        200 if version.ready else 503,
    )


async def infer(request: web.Request) -> web.StreamResponse:
    """One inference request through the model version's batcher."""
    return await _infer(request, explain=False)


async def explain(request: web.Request) -> web.StreamResponse:
    """As infer, with the handler's `explain` header set (TorchServe's v2 `/explain`)."""
    return await _infer(request, explain=True)


async def _infer(request: web.Request, *, explain: bool) -> web.StreamResponse:
    info, config, headers = request.match_info, request.app[CONFIG], request.headers
    wanted: dict[str, bool | None] = {}  # output name → binary wanted (None: the default)

    async def payload() -> TensorRequest:  # read once the version is chosen: errors name it
        body = await read_body(request, config.max_request_size)
        header, binary = _split(body, headers.get(HEADER_LENGTH))
        parsed, asked = _parse(header, binary)
        wanted.update(asked)
        return parsed

    call = Call(
        model=info["model"],
        version=info.get("version"),
        routing_key=headers.get(config.routing_header),
        payload=payload,
        client_request_id=headers.get("x-request-id"),
        headers=tuple(headers.items()),
        timeout_header=headers.get(TIMEOUT_HEADER),
        explain=explain,
    )
    answer = await infer_call(request.app[REGISTRY], call)
    outputs = await answer_tensors(answer, list(wanted))
    version, tensor_request = answer.version, answer.request.payload
    assert isinstance(tensor_request, TensorRequest)
    all_binary = bool(tensor_request.parameters.get("binary_data_output", False))
    response: dict[str, Any] = {
        "model_name": version.name,
        "model_version": version.version,
        "id": tensor_request.id or answer.request_id,
    }
    rendered: list[dict[str, Any]] = []
    chunks_out: list[Any] = []
    for tensor in outputs:
        flag = wanted.get(tensor.name)
        rendered.append(_render(tensor, all_binary if flag is None else bool(flag), chunks_out))
    response["outputs"] = rendered
    reply_headers = {"x-request-id": answer.request_id, MODEL_VERSION: version.version}
    return _reply(response, chunks_out, reply_headers)


def _split(body: bytearray, length: str | None) -> tuple[memoryview, memoryview]:
    view = memoryview(body)
    if length is None:
        return view, view[len(view) :]
    if not length.isdigit() or int(length) > len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} must be a byte count within the body ({len(body)} bytes), "
            f"got {length!r}"
        )
    return view[: int(length)], view[int(length) :]


def _parse(header: memoryview, binary: memoryview) -> tuple[TensorRequest, dict[str, bool | None]]:
    """The request and the requested outputs (name → binary wanted, None: as the default)."""
    body = parse_json(header, "The inference request")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('The inference request must hold "inputs": a non-empty list')
    parsed: list[WireTensor] = []
    offset = 0
    for idx, entry in enumerate(inputs):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"inputs[{idx}] must be an object with a name")
        name = entry["name"]
        what = f"input {name}"
        datatype = tensors.check_datatype(entry.get("datatype"), what)
        shape = tensors.parse_shape(entry.get("shape"), what)
        params = entry.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(
                    f"{what}: binary_data_size {size!r} does not fit the "
                    f"{len(binary) - offset} bytes of binary data left"
                )
            parsed.append(tensors.from_raw(name, datatype, shape, binary[offset : offset + size]))
            offset += size
        elif "data" in entry:
            parsed.append(tensors.from_json_data(name, datatype, shape, entry["data"]))
        else:
            raise BadRequest(f"{what} has neither data nor parameters.binary_data_size")
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    if len({t.name for t in parsed}) != len(parsed):
        raise BadRequest("two inputs have the same name")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    wanted: dict[str, bool | None] = {}
    for idx, entry in enumerate(body.get("outputs") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"outputs[{idx}] must be an object with a name")
        out_params = entry.get("parameters") or {}
        wanted[entry["name"]] = (
            out_params.get("binary_data") if isinstance(out_params, dict) else None
        )
    request_id = body.get("id")
    payload = TensorRequest(
        tuple(parsed), request_id if isinstance(request_id, str) else "", parameters, tuple(wanted)
    )
    return payload, wanted


def _render(tensor: WireTensor, binary: bool, chunks_out: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    if binary:
        raw = tensors.raw_bytes(tensor)
        out["parameters"] = {"binary_data_size": len(raw)}
        chunks_out.append(raw)
    else:
        out["data"] = tensors.json_data(tensor)
    return out


def _reply(response: dict[str, Any], binary: list[Any], headers: dict[str, str]) -> web.Response:
    if not binary:
        return json_reply(response, headers=headers)
    header = orjson.dumps(response)
    return web.Response(
        body=b"".join([header, *binary]),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header)), **headers},
    )
