"""The Open Inference Protocol operations shared by REST and gRPC: metadata and answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handlers.wire import WireTensor
from serve import __version__
from serve.api.infer import Answer
from serve.errors import BadRequest, InternalError, ServeError
from serve.models.registry import Registry
from serve.models.version import ModelVersion

SERVER_NAME = "serve"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "pytorch"


def server_metadata() -> dict[str, Any]:
    """Name, version and the protocol extensions this server speaks."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(registry: Registry, version: ModelVersion) -> dict[str, Any]:
    """The model's name, every version (default first), platform and declared tensors."""
    signature = version.signature
    return {
        "name": version.name,
        "versions": [v.version for v in registry.versions(version.name)],
        "platform": PLATFORM,
        "inputs": [spec.as_json() for spec in signature.inputs] if signature else [],
        "outputs": [spec.as_json() for spec in signature.outputs] if signature else [],
    }


async def answer_tensors(answer: Answer, wanted: Sequence[str]) -> tuple[WireTensor, ...]:
    """The requested outputs of an OIP answer (the protocol answers once: a streaming
    handler's final answer); an error the handler answered in band is raised."""
    with answer.naming():
        output = await answer.last()
        result = output.tensors
        if result is None:
            raise InternalError("The handler's answer is not an inference response")
        if result.error:
            raise ServeError(result.error, status=result.status)
        return select_outputs(result.outputs, wanted)


def select_outputs(
    produced: tuple[WireTensor, ...], wanted: Sequence[str]
) -> tuple[WireTensor, ...]:
    """The requested outputs in the order asked (all when none were named)."""
    if not wanted:
        return produced
    by_name = {tensor.name: tensor for tensor in produced}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise BadRequest(
            f"output {missing[0]} is not an output of the model; it has {', '.join(by_name)}"
        )
    return tuple(by_name[name] for name in wanted)
