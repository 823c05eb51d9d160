"""The OpenAPI paths of the KServe v1 and Open Inference Protocol v2 REST endpoints."""

from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_OBJECT = {"type": "object"}
_INSTANCES = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": {"type": "array", "minItems": 1}},
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                *("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32"),
                *("INT64", "FP16", "FP32", "FP64", "BYTES"),
            ],
        },
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "parameters": {"type": "object"},
    },
}
_NAME = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}


def _reply(description: str, *errors: int) -> dict[str, Any]:
    content = {"application/json": {"schema": _OBJECT}}
    responses: dict[str, Any] = {"200": {"description": description, "content": content}}
    for code in errors:
        responses[str(code)] = {
            "description": {
                400: "Malformed request, or a tensor that does not fit the model",
                404: "Model or version not found",
                413: "Request body larger than max_request_size",
                503: "Not ready, queue full or no worker",
                504: "The request deadline (X-Request-Timeout or max_request_time) passed, "
                "or the model did not answer within response_timeout",
            }[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return responses


def _get(summary: str, versioned: bool, *errors: int) -> dict[str, Any]:
    params = [_NAME, _VERSION] if versioned else [_NAME]
    responses = _reply(summary, *errors)
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _post(
    summary: str, params: list[dict[str, Any]], request: str, schema: dict[str, Any]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": params,
            "requestBody": {
                "description": request,
                "content": {
                    "application/json": {"schema": schema},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": _reply(summary, 400, 404, 413, 503, 504),
        }
    }


def paths(timeout: dict[str, Any], routing: dict[str, Any]) -> dict[str, Any]:
    """Path items keyed by path; inference takes the `timeout` header parameter, and the
    `routing` one too when no version is named (as /predictions)."""
    unversioned = [_NAME, timeout, routing]
    versioned = [_NAME, _VERSION, timeout]
    infer = "OIP inference request; binary tensors after a JSON header of "
    infer += "Inference-Header-Content-Length bytes"
    return {
        "/v1/models": {"get": {"summary": "KServe v1 model list", "responses": _reply("Models")}},
        "/v1/models/{model_name}": _get("KServe v1 model readiness", False, 404, 503),
        "/v1/models/{model_name}:predict": _post(
            "KServe v1 predict", unversioned, '{"instances": [...]}', _INSTANCES
        ),
        "/v1/models/{model_name}:explain": _post(
            "KServe v1 explain", unversioned, '{"instances": [...]}', _INSTANCES
        ),
        "/v2": {"get": {"summary": "OIP server metadata", "responses": _reply("Metadata")}},
        "/v2/health/live": {"get": {"summary": "OIP liveness", "responses": _reply("Live")}},
        "/v2/health/ready": {
            "get": {"summary": "OIP readiness", "responses": _reply("Ready", 503)}
        },
        "/v2/models/{model_name}": _get("OIP model metadata", False, 404),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            "OIP model version metadata", True, 404
        ),
        "/v2/models/{model_name}/ready": _get("OIP model readiness", False, 404, 503),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            "OIP model version readiness", True, 404, 503
        ),
        "/v2/models/{model_name}/infer": _post("OIP inference", unversioned, infer, _INFER),
        "/v2/models/{model_name}/versions/{model_version}/infer": _post(
            "OIP inference with a version", versioned, infer, _INFER
        ),
        "/v2/models/{model_name}/explain": _post("OIP explanation", unversioned, infer, _INFER),
        "/v2/models/{model_name}/versions/{model_version}/explain": _post(
            "OIP explanation with a version", versioned, infer, _INFER
        ),
    }
