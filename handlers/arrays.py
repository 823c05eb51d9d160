"""OIP tensors as numpy arrays and nested lists, and back: the conversions the adapters share.

A leaf of handlers/: the KServe adapters (handlers.protocols) and the tensor handler
(handlers.tensor) both import it, and it imports neither. numpy is imported here, so the
server's side reaches this module only from the executor side.
"""

from __future__ import annotations

from typing import Any, cast

import numpy

from handlers.wire import WireTensor

NUMPY_TYPES = {
    "BOOL": "bool",
    "INT8": "int8",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "uint8",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_DATATYPE_OF = {numpy.dtype(v).name: k for k, v in NUMPY_TYPES.items()}


class UnsupportedValue(TypeError):
    """A handler result that cannot become a tensor or JSON."""


def as_lists(tensor: WireTensor) -> Any:
    """What the kservev2 envelope hands a handler for one input: nested lists; BYTES: data[0]."""
    if tensor.datatype == "BYTES":
        elements = cast(list[bytes], tensor.data)
        if not elements:
            return None
        first = elements[0]
        try:
            return first.decode("utf-8")
        except UnicodeDecodeError:
            return first
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
        elements = [
            x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.reshape(-1)
        ]
        return WireTensor(name, "BYTES", shape, elements)
    datatype = _DATATYPE_OF.get(array.dtype.name)
    if datatype is None:
        raise UnsupportedValue(f"output {name} has dtype {array.dtype}, which OIP cannot carry")
    little = array.astype(NUMPY_TYPES[datatype], copy=False)
    return WireTensor(name, datatype, shape, little.tobytes())
