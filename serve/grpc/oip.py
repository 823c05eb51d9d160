"""KServe's `inference.GRPCInferenceService` (Open Inference Protocol v2 over gRPC).

Served on the gRPC inference address beside TorchServe's services, over the same registry,
batcher and checks as the REST door (serve.api.oip). Inputs come as `raw_input_contents`
or typed `contents`; outputs always go back as `raw_output_contents`, which both the kserve
SDK and tritonclient read. Errors end the RPC with their status (serve.grpc.errors):
NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from typing import Any

import grpclib.const
import grpclib.server

from handlers.wire import TensorRequest, WireTensor
from serve.api.health import server_ready
from serve.api.infer import Call, infer
from serve.api.oip import answer_tensors, model_metadata, server_metadata
from serve.deadline import GRPC_SOURCE
from serve.errors import BadRequest
from serve.grpc.common import CALL, MODEL_VERSION, metadata_value
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
from serve.models.registry import Registry
from serve.models.version import ModelVersion

_INFER = "/inference.GRPCInferenceService/ModelInfer"
InferStream = grpclib.server.Stream[ModelInferRequest, ModelInferResponse]

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
        self._routing_header = registry.config.routing_header.lower()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        mapping[_INFER] = mapping[_INFER]._replace(func=self._model_infer)
        return mapping

    async def _model_infer(self, stream: InferStream) -> None:
        """ModelInfer served from the stream: the routing key comes from the call's metadata,
        and the trailing metadata names the version that answered (`x-model-version`), on
        errors too once a version was chosen (serve.grpc.errors)."""
        message = await stream.recv_message()
        assert message is not None  # grpclib ends a unary call without a message itself
        if not message.model_name:
            raise BadRequest("The model name is required")
        info = CALL.get()

        async def payload() -> TensorRequest:  # parsed once the version is chosen
            return _payload(message)

        call = Call(
            model=message.model_name,
            version=message.model_version or None,
            routing_key=metadata_value(info, self._routing_header),
            payload=payload,
            client_request_id=info.request_id,
            headers=info.headers,
            call_timeout=info.timeout(),
            timeout_source=GRPC_SOURCE,
        )
        answer = await infer(self._registry, call)
        wanted = [output.name for output in message.outputs]
        outputs = await answer_tensors(answer, wanted)
        version = answer.version
        response = ModelInferResponse(
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
        await stream.send_message(response)
        await stream.send_trailing_metadata(metadata={MODEL_VERSION: version.version})

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
        """The named version, else the default (metadata and readiness ignore the split)."""
        if not name:
            raise BadRequest("The model name is required")
        return self._registry.version(name, version or None)


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
    wanted = tuple(output.name for output in message.outputs)
    return TensorRequest(tuple(parsed), message.id, parameters, wanted)


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
