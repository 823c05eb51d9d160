"""OIP tensors as numpy arrays and nested lists, and back: the conversions the adapters share.

A leaf of handlers/: the KServe adapters (handlers.protocols) and the tensor handler
(handlers.tensor) both import it, and it imports neither. numpy is imported here, so the
server's side reaches this module only from the executor side.
"""

from __future__ import annotations

from typing import Any, cast

import numpy
import orjson

from handlers.wire import DATATYPES, WireTensor

NUMPY_TYPES = {n: d.numpy for n, d in DATATYPES.items() if d.numpy is not None}
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_DATATYPE_OF = {numpy.dtype(v).name: k for k, v in NUMPY_TYPES.items()}


class UnsupportedValue(TypeError):
    """A handler result that cannot become a tensor or JSON."""


def as_lists(tensor: WireTensor) -> Any:
    """One input's data as the kservev2 envelope hands it: nested lists; BYTES: data[0].

    A BYTES element that is not UTF-8 (binary data, gRPC) stays bytes; TorchServe's JSON-only
    envelope never meets one. Numbers that came as JSON are handed as sent (the envelope's
    `np.array(data).reshape(shape).tolist()`: integers stay integers, 0.1 is not FP32's 0.1).
    """
    if tensor.datatype == "BYTES":
        elements = cast(list[bytes], tensor.data)
        if not elements:
            return None
        first = elements[0]
        try:
            return first.decode("utf-8")
        except UnicodeDecodeError:
            return first
    if tensor.json_values is not None:
        return numpy.array(tensor.json_values).reshape(tensor.shape).tolist()
    array = numpy.frombuffer(cast(bytes, tensor.data), dtype=NUMPY_TYPES[tensor.datatype])
    return array.reshape(tensor.shape).tolist()


def flat_tensor(name: str, value: Any) -> WireTensor:
    """A handler's value as the kservev2 envelope answers it: flattened, dtype from numpy."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = numpy.asarray(value).reshape(-1)
    except ValueError as exc:  # ragged lists
        raise UnsupportedValue(f"output {name}: {exc}") from exc
    return array_tensor(name, array)


def array_tensor(name: str, array: Any) -> WireTensor:
    """A numpy array as a WireTensor (strings and objects become BYTES)."""
    shape = tuple(int(d) for d in array.shape)
    if array.dtype.kind in "OUS":
        elements: list[bytes] = []
        as_json: list[bool] = []
        for item in array.reshape(-1):
            encoded = _element(item)
            elements.append(encoded if encoded is not None else _json_text(name, item))
            as_json.append(encoded is None)
        return WireTensor(name, "BYTES", shape, elements, json_elements=_flags(as_json))

    datatype = _DATATYPE_OF.get(array.dtype.name)
    if datatype is None:
        raise UnsupportedValue(f"output {name} has dtype {array.dtype}, which OIP cannot carry")
    little = array.astype(NUMPY_TYPES[datatype], copy=False)
    return WireTensor(name, datatype, shape, little.tobytes())


def _element(item: Any) -> bytes | None:
    """A string-like BYTES element as bytes; None for a value that travels as JSON text."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    return None


def _json_text(name: str, item: Any) -> bytes:
    try:
        return orjson.dumps(item, default=jsonable, option=JSON_OPTIONS)
    except TypeError as exc:
        raise UnsupportedValue(f"output {name}: {exc}") from exc


def _flags(as_json: list[bool]) -> tuple[bool, ...]:
    """Per-element JSON flags, or () when no element is JSON (the common case)."""
    return tuple(as_json) if any(as_json) else ()


def jsonable(value: Any) -> Any:
    """orjson's fallback for a handler's values: torch tensors as lists, bytes as text."""
    if hasattr(value, "tolist"):  # torch tensors (numpy arrays are native to orjson)
        return value.tolist()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot serialize {type(value).__name__}")
