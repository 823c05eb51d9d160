"""The Open Inference Protocol's tensors without torch: JSON and binary in, checks, JSON out.

Every input becomes a WireTensor holding little-endian raw bytes (BYTES: a list of
elements), whether it came as JSON data (packed here with `struct`, which also rejects values
of the wrong type) or as binary data (a view into the request body, never copied). The
executor side makes torch tensors of those buffers. Checks name the input at fault.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson

from handlers.wire import DATATYPE_SIZES, DATATYPES, Signature, TensorSpec, WireTensor
from serve.errors import BadRequest, InvalidModel

STRUCT_CODES = {n: d.struct for n, d in DATATYPES.items() if d.struct is not None}
_LENGTH = struct.Struct("<I")


def element_count(shape: Sequence[int]) -> int:
    """Elements in a tensor of this shape (1 for a scalar)."""
    return math.prod(shape)


def parse_shape(value: Any, what: str) -> tuple[int, ...]:
    """A shape from JSON: a list of non-negative integers."""
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"{what}: shape must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def check_datatype(datatype: Any, what: str) -> str:
    """An OIP datatype name, or a 400 naming the tensor."""
    if datatype not in DATATYPE_SIZES:
        raise BadRequest(f"{what}: datatype {datatype!r} is not one of {', '.join(DATATYPE_SIZES)}")
    return cast(str, datatype)


def from_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> WireTensor:
    """A tensor from OIP JSON `data` (flat or nested lists), packed into raw bytes.

    The numbers stay beside the bytes for a TorchServe handler (WireTensor.json_values).
    """
    flat = _flatten(data)
    tensor = from_values(name, datatype, shape, flat)
    if datatype == "BYTES":
        return tensor
    return dataclasses.replace(tensor, json_values=flat)


def from_values(
    name: str, datatype: str, shape: tuple[int, ...], flat: Sequence[Any]
) -> WireTensor:
    """A tensor from a flat sequence of values (BYTES: str or bytes), packed into raw bytes."""
    count = element_count(shape)
    if len(flat) != count:
        raise BadRequest(
            f"input {name}: {len(flat)} data elements, shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        elements: list[bytes] = []
        for item in flat:
            if isinstance(item, bytes):
                elements.append(item)
            elif isinstance(item, str):
                elements.append(item.encode("utf-8"))
            else:
                raise BadRequest(f"input {name}: BYTES data must be strings, got {item!r}")
        return WireTensor(name, datatype, shape, elements)
    try:
        raw = struct.pack(f"<{count}{STRUCT_CODES[datatype]}", *flat)
    except (struct.error, OverflowError) as exc:  # OverflowError: a float past FP16/FP32's range
        raise BadRequest(f"input {name}: data does not fit datatype {datatype}: {exc}") from exc
    return WireTensor(name, datatype, shape, raw)


def from_raw(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | bytearray | memoryview
) -> WireTensor:
    """A tensor from binary data (the REST binary extension or gRPC raw contents)."""
    count = element_count(shape)
    size = DATATYPE_SIZES[datatype]
    if size is None:
        elements = split_bytes(name, raw)
        if len(elements) != count:
            raise BadRequest(
                f"input {name}: {len(elements)} BYTES elements, shape {list(shape)} needs {count}"
            )
        return WireTensor(name, datatype, shape, elements)
    if len(raw) != count * size:
        raise BadRequest(
            f"input {name}: {len(raw)} bytes of data, shape {list(shape)} of {datatype} "
            f"needs {count * size}"
        )
    return WireTensor(name, datatype, shape, raw)


def split_bytes(name: str, raw: bytes | bytearray | memoryview) -> list[bytes]:
    """BYTES elements from their binary form: each a 4-byte little-endian length, then bytes."""
    view = memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise BadRequest(f"input {name}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise BadRequest(f"input {name}: a BYTES element runs past the end of the data")
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def raw_bytes(tensor: WireTensor) -> bytes | bytearray | memoryview:
    """A tensor's binary form (BYTES elements length-prefixed)."""
    if tensor.datatype != "BYTES":
        return cast(bytes, tensor.data)
    elements = cast(list[bytes], tensor.data)
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def json_data(tensor: WireTensor) -> list[Any]:
    """A tensor's flat JSON data (BYTES elements as UTF-8 text, or JSON values where flagged)."""
    if tensor.datatype == "BYTES":
        elements = cast(list[bytes], tensor.data)
        if tensor.json_elements:
            return [
                orjson.Fragment(e) if as_json else e.decode("utf-8", errors="replace")
                for e, as_json in zip(elements, tensor.json_elements, strict=True)
            ]
        return [e.decode("utf-8", errors="replace") for e in elements]
    data = cast(bytes, tensor.data)
    size = DATATYPE_SIZES[tensor.datatype] or 1
    return list(struct.unpack(f"<{len(data) // size}{STRUCT_CODES[tensor.datatype]}", data))


def check_inputs(inputs: Sequence[WireTensor], signature: Signature | None) -> None:
    """Inputs against the model's declaration: names, datatypes and shapes (-1: any size)."""
    if signature is None or not signature.inputs:
        return
    declared = {spec.name: spec for spec in signature.inputs}
    for tensor in inputs:
        spec = declared.get(tensor.name)
        if spec is None:
            raise BadRequest(
                f"input {tensor.name} is not an input of the model; it takes {', '.join(declared)}"
            )
        if tensor.datatype != spec.datatype:
            raise BadRequest(
                f"input {tensor.name}: datatype {tensor.datatype}, the model takes {spec.datatype}"
            )
        if len(tensor.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
        ):
            raise BadRequest(
                f"input {tensor.name}: shape {list(tensor.shape)}, the model takes "
                f"{list(spec.shape)} (-1: any size)"
            )
    given = {tensor.name for tensor in inputs}
    for name in declared:
        if name not in given:
            raise BadRequest(f"input {name} is missing")


def signature_from_yaml(config: Mapping[str, Any]) -> Signature | None:
    """The `inputs:` and `outputs:` of a model-config.yaml, or None when it declares none."""
    if "inputs" not in config and "outputs" not in config:
        return None
    return Signature(_specs(config, "inputs"), _specs(config, "outputs"))


def _specs(config: Mapping[str, Any], key: str) -> tuple[TensorSpec, ...]:
    entries = config.get(key) or []
    if not isinstance(entries, list):
        raise InvalidModel(f"model-config.yaml: {key} must be a list of {{name, datatype, shape}}")
    specs: list[TensorSpec] = []
    for idx, entry in enumerate(entries):
        where = f"model-config.yaml: {key}[{idx}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidModel(f"{where} must be a mapping with a name, datatype and shape")
        if entry.get("datatype") not in DATATYPE_SIZES:
            raise InvalidModel(
                f"{where}.datatype must be one of {', '.join(DATATYPE_SIZES)}, "
                f"got {entry.get('datatype')!r}"
            )
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise InvalidModel(f"{where}.shape must be a list of integers (-1: any size)")
        specs.append(TensorSpec(entry["name"], entry["datatype"], tuple(shape)))
    return tuple(specs)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


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
