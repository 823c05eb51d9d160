"""What the KServe v1 and Open Inference Protocol front doors hand to a handler's service.

Plain data, no torch (DESIGN invariant 7): a tensor rides as a buffer with its datatype and
shape; the executor side (handlers.protocols, handlers.tensor) makes torch tensors of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# InferenceRequest.kind: a batch holds requests of one kind only (0, the default, is
# TorchServe's own predictions).
KIND_TORCHSERVE = 0
KIND_V1 = 1
KIND_OIP = 2


@dataclass(frozen=True, slots=True)
class Datatype:
    """One OIP datatype and what each side spells it as (None: it has no such form)."""

    name: str
    size: int | None  # bytes per element; BYTES elements are length-prefixed
    struct: str | None  # the struct module's code (little-endian packing of JSON data)
    numpy: str | None  # the little-endian numpy dtype
    torch: str | None  # the torch dtype's name
    contents: str | None  # the gRPC ModelInferRequest `contents` field (FP16 must come raw)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", 1, "?", "bool", "bool", "bool_contents"),
        Datatype("INT8", 1, "b", "int8", "int8", "int_contents"),
        Datatype("INT16", 2, "h", "<i2", "int16", "int_contents"),
        Datatype("INT32", 4, "i", "<i4", "int32", "int_contents"),
        Datatype("INT64", 8, "q", "<i8", "int64", "int64_contents"),
        Datatype("UINT8", 1, "B", "uint8", "uint8", "uint_contents"),
        Datatype("UINT16", 2, "H", "<u2", "uint16", "uint_contents"),
        Datatype("UINT32", 4, "I", "<u4", "uint32", "uint_contents"),
        Datatype("UINT64", 8, "Q", "<u8", "uint64", "uint64_contents"),
        Datatype("FP16", 2, "e", "<f2", "float16", None),
        Datatype("FP32", 4, "f", "<f4", "float32", "fp32_contents"),
        Datatype("FP64", 8, "d", "<f8", "float64", "fp64_contents"),
        Datatype("BYTES", None, None, None, None, "bytes_contents"),
    )
}
# OIP datatype → bytes per element (BYTES elements are length-prefixed, so None).
DATATYPE_SIZES: dict[str, int | None] = {name: d.size for name, d in DATATYPES.items()}


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
    `json_values` keeps a REST JSON input's numbers as sent (flat): TorchServe's envelope hands
    a handler those, not their rounding to the datatype. None: the tensor did not come as JSON.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes | bytearray | memoryview | list[bytes]
    parameters: dict[str, Any] = field(default_factory=dict)
    json_elements: tuple[bool, ...] = ()
    json_values: list[Any] | None = None

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
    outputs: tuple[str, ...] = ()  # the outputs asked for by name (none: all of them)


@dataclass(frozen=True, slots=True)
class TensorResult:
    """One request's outputs, or why the request failed (`status` is its HTTP status)."""

    outputs: tuple[WireTensor, ...] = ()
    error: str = ""
    status: int = 200
