"""Open Inference Protocol answers shared by REST and gRPC: server and model metadata, readiness."""

from __future__ import annotations

from typing import Any

from serve import __version__
from serve.models.registry import Registry
from serve.models.version import ModelVersion

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
