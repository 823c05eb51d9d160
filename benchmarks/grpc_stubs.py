"""grpcio stubs for TorchServe's `inference.proto`, generated at bench time from proto/.

The gRPC load mode (`--transport grpc`) needs `proto/inference.proto` (TorchServe's, package
`org.pytorch.serve.grpc.inference`) and grpcio-tools. Stubs go to a cache folder keyed by the
proto's content, so they are made once per change.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
PROTO = PROTO_DIR / "inference.proto"


def load_stubs() -> tuple[ModuleType, ModuleType]:
    """(inference_pb2, inference_pb2_grpc), generating them first if needed."""
    if not PROTO.is_file():
        raise RuntimeError(
            f"gRPC load needs {PROTO} (TorchServe's inference.proto); it is not there yet"
        )
    digest = hashlib.sha256(PROTO.read_bytes() + b"+status").hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"bench-grpc-stubs-{digest}"
    if not (out / "inference_pb2_grpc.py").is_file():
        _generate(out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("inference_pb2"), importlib.import_module("inference_pb2_grpc")


def _generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO),
            str(PROTO_DIR / "google" / "rpc" / "status.proto"),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) on {PROTO}")
