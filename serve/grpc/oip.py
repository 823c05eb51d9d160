"""KServe's `inference.GRPCInferenceService` (Open Inference Protocol v2 over gRPC).

Served on the gRPC inference address beside TorchServe's services, over the same registry,
batcher and checks as the REST door (serve.models.oip). Inputs come as `raw_input_contents`
or typed `contents`; outputs always go back as `raw_output_contents`, which both the kserve
SDK and tritonclient read. Errors end the RPC with their status (serve.grpc.errors):
NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import time
from typing import Any

from handlers.wire import TensorRequest, WireTensor
from serve.batching.request import new_request_id
from serve.errors import BadRequest
from serve.grpc.gen.inference import (
    GrpcInferenceServiceBase,
    InferParameter,
    InferTensorContents,
    ModelInferRequest,
    ModelInferRequestInferInputTensor,
    ModelInferResponse,
    ModelInferResponseInferOutputTensor,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelMetadataResponseTensorMetadata,
    ModelReadyRequest,
    ModelReadyResponse,
    RepositoryModelLoadRequest,
    RepositoryModelLoadResponse,
    RepositoryModelUnloadRequest,
    RepositoryModelUnloadResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)
from serve.models import tensors
from serve.models.oip import model_metadata, run_infer, server_metadata, server_ready
from serve.models.registry import Registry
from serve.models.version import ModelVersion

# Which typed `contents` field carries each datatype (FP16 has none: it must come raw).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class OipService(GrpcInferenceServiceBase):
    """The OIP gRPC service over one registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def server_live(self, message: ServerLiveRequest) -> ServerLiveResponse:
        """The server answers: it is live."""
        return ServerLiveResponse(live=True)

    async def server_ready(self, message: ServerReadyRequest) -> ServerReadyResponse:
        """Every registered model version has its minimum workers ready."""
        return ServerReadyResponse(ready=server_ready(self._registry))

    async def model_ready(self, message: ModelReadyRequest) -> ModelReadyResponse:
        """The version (default when none is named) has its minimum workers ready."""
        return ModelReadyResponse(ready=self._version(message.name, message.version).ready)

    async def server_metadata(self, message: ServerMetadataRequest) -> ServerMetadataResponse:
        """Name, version and extensions."""
        body = server_metadata()
        return ServerMetadataResponse(
            name=body["name"], version=body["version"], extensions=body["extensions"]
        )

    async def model_metadata(self, message: ModelMetadataRequest) -> ModelMetadataResponse:
        """Name, versions, platform and the declared tensors."""
        body = model_metadata(self._registry, self._version(message.name, message.version))
        return ModelMetadataResponse(
            name=body["name"],
            versions=body["versions"],
            platform=body["platform"],
            inputs=[ModelMetadataResponseTensorMetadata(**t) for t in body["inputs"]],
            outputs=[ModelMetadataResponseTensorMetadata(**t) for t in body["outputs"]],
        )

    async def model_infer(self, message: ModelInferRequest) -> ModelInferResponse:
        """One inference request through the version's batcher; outputs as raw contents."""
        url_version = message.model_version or None
        version = self._version(message.model_name, message.model_version)
        started = time.monotonic()
        payload = _payload(message)
        wanted = [output.name for output in message.outputs]
        rid = new_request_id()
        outputs = await run_infer(version, payload, wanted, (), rid, url_version, started)
        return ModelInferResponse(
            model_name=version.name,
            model_version=version.version,
            id=message.id,
            outputs=[
                ModelInferResponseInferOutputTensor(
                    name=t.name, datatype=t.datatype, shape=list(t.shape)
                )
                for t in outputs
            ],
            raw_output_contents=[bytes(tensors.raw_bytes(t)) for t in outputs],
        )

    async def repository_model_load(
        self, message: RepositoryModelLoadRequest
    ) -> RepositoryModelLoadResponse:
        """Not served: models are registered through the management API."""
        raise BadRequest("Use the management API (POST /models) to register models")

    async def repository_model_unload(
        self, message: RepositoryModelUnloadRequest
    ) -> RepositoryModelUnloadResponse:
        """Not served: models are unregistered through the management API."""
        raise BadRequest("Use the management API (DELETE /models/{model}) to unregister models")

    def _version(self, name: str, version: str) -> ModelVersion:
        if not name:
            raise BadRequest("The model name is required")
        return self._registry.get(name, version or None)


def _payload(message: ModelInferRequest) -> TensorRequest:
    if not message.inputs:
        raise BadRequest("The inference request has no inputs")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    parsed: list[WireTensor] = []
    for idx, entry in enumerate(message.inputs):
        what = f"input {entry.name}"
        datatype = tensors.check_datatype(entry.datatype, what)
        shape = tensors.parse_shape(list(entry.shape), what)
        if raw:
            parsed.append(tensors.from_raw(entry.name, datatype, shape, raw[idx]))
        else:
            parsed.append(_from_contents(entry, datatype, shape))
    if len({t.name for t in parsed}) != len(parsed):
        raise BadRequest("two inputs have the same name")
    parameters = {key: _parameter(value) for key, value in message.parameters.items()}
    return TensorRequest(tuple(parsed), message.id, parameters)


def _from_contents(
    entry: ModelInferRequestInferInputTensor, datatype: str, shape: tuple[int, ...]
) -> WireTensor:
    field = _CONTENTS.get(datatype)
    if field is None:
        raise BadRequest(f"input {entry.name}: {datatype} data must come in raw_input_contents")
    contents = entry.contents or InferTensorContents()
    return tensors.from_values(entry.name, datatype, shape, getattr(contents, field))


def _parameter(value: InferParameter) -> Any:
    for field in ("bool_param", "int64_param", "string_param"):
        found = getattr(value, field)
        if found is not None:
            return found
    return None
