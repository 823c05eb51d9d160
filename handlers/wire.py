"""What the KServe v1 and Open Inference Protocol front doors hand to a handler's service.

Plain data, no torch (DESIGN invariant 7): a tensor rides as a buffer with its datatype and
shape; the executor side (handlers.protocols, handlers.tensor) makes torch tensors of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# InferenceRequest.kind: a batch holds requests of one kind only (0, the default, is
# TorchServe's own predictions).
KIND_V1 = 1
KIND_OIP = 2

# OIP datatype → bytes per element (BYTES elements are length-prefixed, so None).
DATATYPE_SIZES: dict[str, int | None] = {
    "BOOL": 1,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BYTES": None,
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared input or output: name, OIP datatype, shape (-1 for any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        """The tensor metadata object of OIP model metadata."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """A model's declared inputs and outputs."""

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class WireTensor:
    """One tensor as it travels: little-endian raw bytes, or for BYTES a list of elements.

    `json_elements[i]` is true where BYTES element i is the JSON text of a handler's value that
    is not a string (a dict, say): REST's JSON answer renders the value itself, as TorchServe's
    kservev2 envelope does; binary and gRPC answers carry the text. Empty: none is.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes | bytearray | memoryview | list[bytes]
    parameters: dict[str, Any] = field(default_factory=dict)
    json_elements: tuple[bool, ...] = ()

    @property
    def rows(self) -> int:
        """The size of the first (batch) dimension; 1 for a scalar."""
        return self.shape[0] if self.shape else 1


@dataclass(frozen=True, slots=True)
class Instances:
    """A KServe v1 request: each instance is one entry of the handler's batch."""

    instances: list[Any]
    explain: bool = False


@dataclass(frozen=True, slots=True)
class TensorRequest:
    """An OIP inference request (REST or gRPC), parsed and checked at the door."""

    inputs: tuple[WireTensor, ...]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TensorResult:
    """One request's outputs, or why the request failed (`status` is its HTTP status)."""

    outputs: tuple[WireTensor, ...] = ()
    error: str = ""
    status: int = 200
