"""The OpenAPI 3 descriptions of the REST APIs, one per port as in TorchServe: the inference
API's (`OPTIONS /` and `/api-description` on the inference port) and the management API's
(`OPTIONS /` on the management port). Each says what the server does, so a fuzzer generating
requests from it (tests/rest/test_fuzz_openapi.py) holds the server to it."""

from __future__ import annotations

from functools import cache
from typing import Any

from serve import __version__
from serve.auth.public import PUBLIC_PATHS, template
from serve.config import MAX_INT, MAX_WORKERS
from serve.http import oip_openapi

_ERROR = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {
        "code": {"type": "integer"},
        "type": {"type": "string"},
        "message": {"type": "string"},
    },
}
_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}
_SPLIT = {
    "type": "object",
    "description": 'Integer weights by version, optionally "shadow": percentages by version',
    "properties": {
        "shadow": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
        }
    },
    "additionalProperties": {"type": "integer", "minimum": 0},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request: a parameter or the body is malformed",
        403: "Forbidden operation",
        404: "Model, version or path not found",
        405: "Method not allowed, or the model API is disabled",
        409: "Version already registered, or unregistered by a concurrent request",
        413: "Request body larger than max_request_size",
        500: "Internal error, or workers failed to start",
        503: "Queue full or no worker; retry later (Retry-After)",
        504: "The model did not answer within response_timeout, or the request deadline "
        "(X-Request-Timeout or max_request_time) passed",
        507: "Out of resources",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": schema,
        "description": description,
    }


_MODEL = _param("model_name", "path", {"type": "string"}, "Model name", True)
_VERSION = _param("model_version", "path", {"type": "string"}, "Model version", True)
_INT = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
_WORKERS = {"type": "integer", "minimum": 0, "maximum": MAX_WORKERS}
_SECONDS = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": MAX_INT}
_BOOL = {"type": "boolean"}
_TIMEOUT = _param(
    "X-Request-Timeout",
    "header",
    {"type": "integer", "minimum": 1},
    "Deadline in milliseconds from arrival; past it the request is answered 504 and dropped "
    "if still queued (the server's max_request_time applies too; the sooner wins)",
)
_ROUTING = _param(
    "X-Routing-Key",
    "header",
    {"type": "string"},
    "Sticky key for the model's traffic split: the same key reaches the same version "
    "(the header's name is the server's routing_header; ignored when a version is named)",
)


def _predict(summary: str, with_version: bool) -> dict[str, Any]:
    """A prediction path. TorchServe does not check the method; POST is the one documented."""
    params = [_MODEL, _VERSION, _TIMEOUT] if with_version else [_MODEL, _TIMEOUT, _ROUTING]
    return {
        "post": {
            "operationId": summary.replace(" ", "_"),
            "summary": summary,
            "parameters": params,
            "requestBody": {
                "description": "Model input: raw bytes, JSON, text, or form fields",
                "content": {
                    "*/*": {"schema": {"type": "string", "format": "binary"}},
                    # an empty form has nothing to hand the handler: 400
                    "multipart/form-data": {"schema": {"type": "object", "minProperties": 1}},
                },
            },
            "responses": {
                "200": {"description": "The handler's output", "content": {"*/*": {"schema": {}}}},
                **_errors(400, 404, 413, 500, 503, 504, 507),
                "default": {
                    "description": "A status the handler chose (context.set_response_status)",
                    "content": {"*/*": {"schema": {}}},
                },
            },
        }
    }


def _invocations() -> dict[str, Any]:
    """SageMaker's path: the model from `model_name`, else the one loaded at startup."""
    path = _predict("Invoke a model", False)
    name = _param("model_name", "query", {"type": "string"}, "Model (default: the startup one)")
    path["post"]["parameters"] = [name, _TIMEOUT, _ROUTING]
    return path


def _secured(paths: dict[str, Any]) -> None:
    """Mark the public operations (no key) and give every other one its 401."""
    refused = _json(_ERROR, "Missing, wrong or expired key (InvalidKeyException)")
    for path, operations in paths.items():
        public = template(path) in PUBLIC_PATHS
        for operation in operations.values():
            if public:
                operation["security"] = []
            else:
                operation["responses"]["401"] = refused


def _document(description: str, paths: dict[str, Any]) -> dict[str, Any]:
    _secured(paths)
    return {
        "openapi": "3.0.1",
        "info": {
            "title": "serve: TorchServe-compatible model server APIs",
            "version": __version__,
            "description": description,
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR, "Status": _STATUS},
            # the key from key_file.json: inference key on 8080, management key on 8081
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _this_document(method: str) -> dict[str, Any]:
    return {
        method: {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI")},
        }
    }


def _ready(parameters: list[dict[str, Any]], summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": _json({"type": "object"}, "Ready"),
                "503": _json({"type": "object"}, "Not ready"),
                **(_errors(404) if parameters else {}),
            },
        }
    }


@cache
def inference_description() -> dict[str, Any]:
    """The inference port's OpenAPI document (built once)."""
    return _document(
        "Inference API: health, readiness, predictions, explanations, KServe v1 and Open "
        'Inference Protocol v2 (whose errors are {"error": message}).',
        {
            "/": _this_document("options"),
            "/api-description": _this_document("get"),
            "/ping": {
                "get": {
                    "summary": "Health (TorchServe semantics: loading workers count as healthy)",
                    "responses": {
                        "200": _json(_STATUS, "Healthy"),
                        "500": _json(_STATUS, "Unhealthy"),
                    },
                }
            },
            "/ready": _ready([], "Readiness: every model version has min_workers ready"),
            "/ready/{model_name}": _ready([_MODEL], "Readiness of a model's default version"),
            "/ready/{model_name}/{model_version}": _ready(
                [_MODEL, _VERSION], "Readiness of one version"
            ),
            "/predictions/{model_name}": _predict("Predict with the default version", False),
            "/predictions/{model_name}/{model_version}": _predict("Predict with a version", True),
            "/explanations/{model_name}": _predict("Explain with the default version", False),
            "/explanations/{model_name}/{model_version}": _predict("Explain with a version", True),
            "/invocations": _invocations(),
            "/models/{model_name}/invoke": _predict("Invoke the default version", False),
            "/{model_name}/predict": _predict("Legacy predict with the default version", False),
            "/{model_name}/{model_version}/predict": _predict(
                "Legacy predict with a version", True
            ),
            **oip_openapi.paths(_TIMEOUT, _ROUTING),
        },
    )


@cache
def management_description() -> dict[str, Any]:
    """The management port's OpenAPI document (built once)."""
    scale_params = [
        _param("min_worker", "query", _WORKERS, "Workers to run (default 1)"),
        _param("max_worker", "query", _WORKERS, "Upper bound, at least min_worker"),
        _param("synchronous", "query", _BOOL, "Wait for the workers (default false)"),
    ]
    register_params = [
        _param(
            "url",
            "query",
            {"type": "string", "minLength": 1},
            "Archive file or folder in the model store, or an http(s):// or file:// URL "
            "matching allowed_urls",
            True,
        ),
        _param("model_name", "query", {"type": "string"}, "Name (default: the manifest's)"),
        _param("handler", "query", {"type": "string"}, "Handler (default: the manifest's)"),
        _param("runtime", "query", {"type": "string", "enum": ["python", "python3"]}, "Runtime"),
        _param("batch_size", "query", {**_INT, "minimum": 1}, "Largest batch"),
        _param("max_batch_delay", "query", _INT, "Longest wait to fill a batch, ms"),
        _param("initial_workers", "query", _WORKERS, "Workers to start"),
        _param("response_timeout", "query", _SECONDS, "Seconds a batch may run"),
        _param("startup_timeout", "query", _SECONDS, "Seconds to wait for loading"),
        _param("synchronous", "query", _BOOL, "Wait for the workers (default true)"),
    ]
    customized = _param("customized", "query", _BOOL, "Include the handler's metadata")
    describe = {
        "summary": "Describe the default version",
        "parameters": [_MODEL, customized],
        "responses": {
            "200": _json({"type": "array", "items": {"type": "object"}}, "Describe objects"),
            # customized=true asks the handler, on a worker, within response_timeout
            **_errors(400, 404, 503, 504),
        },
    }
    scaled = {
        "200": _json(_STATUS, "Scaled"),
        "202": _json(_STATUS, "Scaling"),
        "206": _json(_STATUS, "Scaling in progress"),
        **_errors(400, 404, 409),
    }
    unregistered = {"200": _json(_STATUS, "Unregistered"), **_errors(403, 404, 405)}
    return _document(
        "Management API: list, register, describe, scale, set-default, unregister, traffic "
        "splits, key renewal.",
        {
            "/": _this_document("options"),
            "/models": {
                "get": {
                    "summary": "List the models' default versions",
                    "parameters": [
                        _param(
                            "limit", "query", {"type": "integer"}, "Page size (outside 0-100: 100)"
                        ),
                        _param(
                            "next_page_token",
                            "query",
                            {"type": "integer", "minimum": 0},
                            "Offset from the last page",
                        ),
                    ],
                    "responses": {"200": _json({"type": "object"}, "Models"), **_errors(400)},
                },
                "post": {
                    "summary": "Register a model (needs enable_model_api)",
                    "parameters": register_params,
                    "responses": {
                        "200": _json(_STATUS, "Registered, workers ready"),
                        "202": _json(_STATUS, "Registered, workers loading"),
                        **_errors(400, 404, 405, 409, 500),
                    },
                },
            },
            "/models/{model_name}": {
                "get": describe,
                "put": {
                    "summary": "Scale the default version's workers",
                    "parameters": [_MODEL, *scale_params],
                    "responses": scaled,
                },
                "delete": {
                    "summary": "Unregister the default version (needs enable_model_api)",
                    "parameters": [_MODEL],
                    "responses": unregistered,
                },
            },
            "/models/{model_name}/{model_version}": {
                "get": {
                    **describe,
                    "summary": "Describe a version, or all versions",
                    "parameters": [_MODEL, _VERSION, customized],
                },
                "put": {
                    "summary": "Scale a version's workers",
                    "parameters": [_MODEL, _VERSION, *scale_params],
                    "responses": scaled,
                },
                "delete": {
                    "summary": "Unregister a version (needs enable_model_api)",
                    "parameters": [_MODEL, _VERSION],
                    "responses": unregistered,
                },
            },
            "/models/{model_name}/traffic": {
                "get": {
                    "summary": "The traffic split of unversioned requests",
                    "parameters": [_MODEL],
                    "responses": {"200": _json(_SPLIT, "Weights by version"), **_errors(404)},
                },
                "put": {
                    "summary": "Split unversioned requests between versions (and shadow them)",
                    "parameters": [_MODEL],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _SPLIT}},
                    },
                    "responses": {"200": _json(_STATUS, "Split set"), **_errors(400, 404)},
                },
                "delete": {
                    "summary": "Remove the split: the default version takes all",
                    "parameters": [_MODEL],
                    "responses": {"200": _json(_STATUS, "Split removed"), **_errors(404)},
                },
            },
            "/models/{model_name}/{model_version}/set-default": {
                "put": {
                    "summary": "Make a version the default",
                    "parameters": [_MODEL, _VERSION],
                    "responses": {"200": _json(_STATUS, "Default set"), **_errors(404)},
                }
            },
            "/token": {
                "get": {
                    "summary": "Renew the management or inference key (API key)",
                    "parameters": [
                        _param(
                            "type",
                            "query",
                            {"type": "string", "enum": ["management", "inference"]},
                            "Which key to renew; the new one is written to key_file.json",
                            True,
                        )
                    ],
                    "responses": {
                        "200": _json(_STATUS, "Renewed; the old key is refused from now on"),
                        # 404: token authorization is off, there is no key to renew
                        **_errors(400, 404),
                    },
                }
            },
            "/v1/models/{model_name}": {
                "get": {
                    "summary": "KServe v1 readiness of the default version",
                    "parameters": [_MODEL],
                    "responses": {
                        "200": _json({"type": "object"}, "Name and readiness"),
                        **_errors(404),
                    },
                }
            },
        },
    )
