"""The Open Inference Protocol operations shared by REST and gRPC: metadata, readiness, infer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from handlers.wire import KIND_OIP, Signature, TensorRequest, WireTensor
from serve import __version__
from serve.api.predict import chunks, predict
from serve.deadline import Deadline
from serve.errors import BadRequest, InternalError, ServeError
from serve.models.registry import Registry
from serve.models.tensors import check_inputs
from serve.models.version import ModelVersion
from serve.request import InferenceRequest

SERVER_NAME = "serve"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "pytorch"


def server_metadata() -> dict[str, Any]:
    """Name, version and the protocol extensions this server speaks."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def server_ready(registry: Registry) -> bool:
    """Every registered model version has its minimum workers ready (TorchServe: always)."""
    return all(v.ready for m in registry.models.values() for v in m.versions.values())


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


async def run_infer(
    version: ModelVersion,
    payload: TensorRequest,
    wanted: Sequence[str],
    headers: tuple[tuple[str, str], ...],
    request_id: str,
    url_version: str | None,
    started: float,
    deadline: Deadline | None = None,
) -> tuple[WireTensor, ...]:
    """Check a parsed request, run it through the version's batcher, and pick its outputs.

    The request fills as many batch items as its first input has rows (dimension 0); past
    its `deadline` it is answered 504 (and dropped before a handler if still queued).
    """
    signature = version.signature
    check_inputs(payload.inputs, signature)
    check_outputs(wanted, signature)
    job = InferenceRequest(
        request_id,
        (),
        headers,
        asyncio.get_running_loop(),
        kind=KIND_OIP,
        payload=payload,
        items=max(1, payload.inputs[0].rows),
        deadline=deadline,
    )
    output = await predict(version, job, url_version, started)
    if not output.final:  # the protocol answers once: wait for the handler's final answer
        async for item in chunks(job, output):
            output = item
    result = output.tensors
    if result is None:
        raise InternalError("The handler's answer is not an inference response")
    if result.error:
        raise ServeError(result.error, status=result.status)
    return select_outputs(result.outputs, wanted)


def check_outputs(wanted: Sequence[str], signature: Signature | None) -> None:
    """Requested outputs must be declared ones (when the model declares its outputs)."""
    if signature is None or not signature.outputs:
        return
    declared = [spec.name for spec in signature.outputs]
    for name in wanted:
        if name not in declared:
            raise BadRequest(
                f"output {name} is not an output of the model; it has {', '.join(declared)}"
            )


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
