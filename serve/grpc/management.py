"""TorchServe's ManagementAPIsService over the operations REST uses (serve.api.operations).

Every RPC answers `ManagementResponse{msg}` with what TorchServe's gRPC API puts there: the
pretty-printed JSON of REST's body for DescribeModel and ListModels, and the bare status text
(REST's `{"status": ...}` value) for the others. proto3 fields have no presence, so 0, "" and
false mean "not set" and take the same defaults as an omitted REST parameter; synchronous is
the exception, false when not set, as in TorchServe.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from serve.api import operations
from serve.config import Config
from serve.errors import BadRequest
from serve.grpc.gen.org.pytorch.serve.grpc.management import (
    DescribeModelRequest,
    ListModelsRequest,
    ManagementApIsServiceBase,
    ManagementResponse,
    RegisterModelRequest,
    ScaleWorkerRequest,
    SetDefaultRequest,
    UnregisterModelRequest,
)
from serve.models.registry import Registry


class ManagementService(ManagementApIsServiceBase):
    """The management service over one registry."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self._config = config
        self._registry = registry

    async def describe_model(self, message: DescribeModelRequest) -> ManagementResponse:
        """The describe JSON array (`model_version: "all"` for every version)."""
        name = _required(message.model_name, "model_name")
        bodies = await operations.describe(
            self._registry, name, message.model_version or None, _given(message)
        )
        return _json(bodies)

    async def list_models(self, message: ListModelsRequest) -> ManagementResponse:
        """Default versions sorted by name, paged by limit and next_page_token."""
        return _json(operations.list_models(self._registry, _given(message)))

    async def register_model(self, message: RegisterModelRequest) -> ManagementResponse:
        """Register an archive from the model store (PERMISSION_DENIED unless enable_model_api)."""
        operations.check_model_api(self._config, "register")
        params = operations.register_params({**_given(message), "synchronous": message.synchronous})
        reply = await operations.register(self._registry, params)
        return ManagementResponse(msg=reply.message)

    async def scale_worker(self, message: ScaleWorkerRequest) -> ManagementResponse:
        """Set a version's worker count; min_worker 0 means 1, as in TorchServe."""
        name = _required(message.model_name, "model_name")
        reply = await operations.scale(
            self._registry, name, message.model_version or None, _given(message)
        )
        return ManagementResponse(msg=reply.message)

    async def set_default(self, message: SetDefaultRequest) -> ManagementResponse:
        """Make a version the default one."""
        name = _required(message.model_name, "model_name")
        version = _required(message.model_version, "model_version")
        reply = operations.set_default(self._registry, name, version)
        return ManagementResponse(msg=reply.message)

    async def unregister_model(self, message: UnregisterModelRequest) -> ManagementResponse:
        """Remove a version (PERMISSION_DENIED unless enable_model_api)."""
        operations.check_model_api(self._config, "unregister")
        name = _required(message.model_name, "model_name")
        reply = await operations.unregister(self._registry, name, message.model_version or None)
        return ManagementResponse(msg=reply.message)


def _given(message: Any) -> dict[str, Any]:
    """The fields a client set: proto3 cannot tell 0, "" or false from "not set"."""
    values = {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}
    return {name: value for name, value in values.items() if value}


def _required(value: str, name: str) -> str:
    if not value:
        raise BadRequest(f"Parameter {name} is required.")
    return value


def _json(body: Any) -> ManagementResponse:
    return ManagementResponse(msg=orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
