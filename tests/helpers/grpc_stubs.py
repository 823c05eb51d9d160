"""What the gRPC tests need: grpcio stubs generated from our protos, and model stores.

The grpcio stubs are what a TorchServe user has (generated with grpcio-tools from the .proto
files), so they check the wire contract independently of the betterproto2 code the server uses.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import cast

import grpc

from tests.helpers import handlers as src
from tests.helpers.server import REPO, model_folder

PROTOS = ("inference.proto", "management.proto", "google/rpc/status.proto")


def failed_call(error: grpc.RpcError) -> grpc.Call:
    """A failed grpcio call's error as the `grpc.Call` it also is.

    grpcio raises `_InactiveRpcError(RpcError, Call)`; types-grpcio types `RpcError` alone with
    `details() -> str | None` and trailing metadata of a non-tuple `_Metadatum`, where the
    call's are a str and (key, value) pairs.
    """
    return cast(grpc.Call, error)


def grpcio_stubs(out: Path) -> dict[str, ModuleType]:
    """Generate and import `inference_pb2(_grpc)` and `management_pb2(_grpc)` from proto/."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *(str(REPO / "proto" / name) for name in PROTOS),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(out))
    try:
        names = ("inference_pb2", "inference_pb2_grpc", "management_pb2", "management_pb2_grpc")
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(out))


def build_store(store: Path) -> None:
    """The models of the gRPC test server; `spare` is in the store but not loaded."""
    model_folder(store, "echo", src.ECHO)
    model_folder(store, "kinds", src.TEXT_KINDS)
    model_folder(store, "failing", src.FAILING)
    model_folder(store, "streaming", src.STREAMING)
    model_folder(store, "gated", src.GATED)
    model_folder(store, "breaking", src.BREAKING)
    model_folder(store, "spare", src.VERSIONED.format(version="1.0"), name="spare")
    model_folder(
        store, "spare-v2", src.VERSIONED.format(version="2.0"), name="spare", version="2.0"
    )


LOADED = ["echo", "kinds", "failing", "streaming", "gated", "breaking"]
MODELS = {
    "echo": {"1.0": {"batch_size": 8, "max_batch_delay": 100}},
    "streaming": {"1.0": {"batch_size": 1}},
    "breaking": {"1.0": {"batch_size": 1}},
}
