"""Tensor handlers: named torch tensors in, named tensors out, batched along dimension 0.

    from handlers.tensor import TensorHandler, TensorSpec

    class Scale(TensorHandler):
        inputs = [TensorSpec("x", "FP32", (-1, 4))]
        outputs = [TensorSpec("y", "FP32", (-1, 4))]

        def infer(self, inputs):
            return {"y": inputs["x"] * 2}

The requests of a batch are concatenated along dimension 0 (requests whose other dimensions
differ run as separate calls), `infer` sees one tensor per input name, and every output is
split back along dimension 0 so each request gets its own rows. A binary payload becomes a
tensor without a copy (torch.frombuffer over the request body); BYTES inputs arrive as a list
of bytes and a BYTES output may be a list of bytes or str, one per row. torch is imported only
inside functions: the server imports this module for the class, not for torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, ClassVar, cast

from handlers.context import Context, RequestProcessor
from handlers.errors import PredictionException
from handlers.messages import BatchFailure, HandlerRequest, Output
from handlers.wire import DATATYPES, Signature, TensorRequest, TensorResult, TensorSpec, WireTensor

if TYPE_CHECKING:
    import torch

    from handlers.service import Service

__all__ = ["TensorHandler", "TensorSpec"]

logger = logging.getLogger(__name__)

_TORCH_TYPES = {n: d.torch for n, d in DATATYPES.items() if d.torch is not None}


class RowMismatch(ValueError):
    """An output whose dimension 0 does not match the rows of the batch."""


class TensorHandler:
    """Base class of a tensor handler: declare `inputs` and `outputs`, implement `infer`.

    The declaration may also live in model-config.yaml (`inputs:` / `outputs:`, each a list
    of `{name, datatype, shape}`), which wins over the class's. The server checks requests
    against it (400 naming the input) and serves it as the model's metadata.
    """

    inputs: ClassVar[Sequence[TensorSpec]] = ()
    outputs: ClassVar[Sequence[TensorSpec]] = ()

    context: Context
    device: torch.device

    def initialize(self, context: Context) -> None:
        """Keep the context and pick the executor's device; override to load weights."""
        import torch

        self.context = context
        gpu = context.system_properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu}" if gpu is not None else "cpu")

    def infer(self, inputs: dict[str, Any]) -> Mapping[str, Any]:
        """The outputs for a batch: each a tensor (or BYTES list) with one row per input row."""
        raise NotImplementedError

    def handle(self, data: Any, context: Context) -> Any:
        """TorchServe's entry point: a tensor handler answers only tensor requests."""
        raise PredictionException(
            f"Model {context.model_name} takes named tensors: use the Open Inference Protocol "
            f"(POST /v2/models/{context.model_name}/infer)",
            400,
        )

    @property
    def signature(self) -> Signature | None:
        """The declared inputs and outputs, or None when the class declares none."""
        if not self.inputs and not self.outputs:
            return None
        return Signature(tuple(self.inputs), tuple(self.outputs))


def to_tensor(wire: WireTensor) -> Any:
    """A torch tensor over the wire buffer (no copy when it is writable); BYTES: a list."""
    import torch

    if wire.datatype == "BYTES":
        return list(cast(list[bytes], wire.data))
    dtype = getattr(torch, _TORCH_TYPES[wire.datatype])
    data = wire.data
    if isinstance(data, bytes):  # immutable (a gRPC field): torch needs a writable buffer
        data = bytearray(data)
    if not len(cast(Sized, data)):
        return torch.empty(wire.shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype).reshape(wire.shape)


def predict(service: Service, batch: Sequence[HandlerRequest]) -> list[Output] | BatchFailure:
    """One `infer` call per group of requests whose inputs concatenate; answers in order."""
    groups: dict[object, list[int]] = {}
    answers: list[Output | None] = [None] * len(batch)
    for idx, request in enumerate(batch):
        inputs = cast(TensorRequest, request.payload).inputs
        uneven = _uneven_rows(inputs)
        if uneven:  # only this request is wrong: it alone gets the error
            answers[idx] = Output(body=b"", tensors=TensorResult(error=uneven, status=400))
            continue
        key: object = tuple((t.name, t.datatype, t.shape[1:]) for t in inputs)
        if any(not t.shape for t in inputs):
            key = idx  # a scalar cannot be concatenated: it runs alone
        groups.setdefault(key, []).append(idx)
    for members in groups.values():
        result = _run(service, [batch[i] for i in members])
        if isinstance(result, BatchFailure):
            return result
        for idx, output in zip(members, result, strict=True):
            answers[idx] = output
    return cast(list[Output], answers)


def _run(service: Service, group: list[HandlerRequest]) -> list[Output] | BatchFailure:
    import torch

    handler = cast(TensorHandler, service.tensor_handler)
    payloads = [cast(TensorRequest, r.payload) for r in group]
    rows = [p.inputs[0].rows if p.inputs else 1 for p in payloads]
    inputs: dict[str, Any] = {}
    for position, first in enumerate(payloads[0].inputs):
        parts = [to_tensor(p.inputs[position]) for p in payloads]
        if first.datatype == "BYTES":
            inputs[first.name] = [item for part in parts for item in part]
        else:
            inputs[first.name] = parts[0] if len(parts) == 1 else torch.cat(parts)
    processors = [RequestProcessor(dict(r.headers)) for r in group]
    ids = {idx: r.request_id for idx, r in enumerate(group)}

    def call(data: dict[str, Any], context: Context) -> Any:
        return handler.infer(data)

    result = service.invoke(call, inputs, processors, ids, None)
    if isinstance(result, BatchFailure):
        return result
    if not isinstance(result, Mapping):
        return BatchFailure(
            503, "Invalid model predict output", detail="infer must return a dict of tensors"
        )
    try:
        split = _split_outputs(result, rows)
    except RowMismatch as exc:
        logger.warning("Model %s: %s", service.context.model_name, exc)
        return BatchFailure(503, "number of batch response mismatched", detail=str(exc))
    except (TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
        logger.warning("Model %s: unusable infer output", service.context.model_name, exc_info=True)
        return BatchFailure(503, "Unsupported model output data type.", detail=str(exc))
    return [
        Output(
            body=b"",
            status=processor.get_response_status_code(),
            headers=dict(processor.get_response_headers()),
            tensors=TensorResult(tuple(tensors)),
        )
        for processor, tensors in zip(processors, split, strict=True)
    ]


def _split_outputs(result: Mapping[str, Any], rows: list[int]) -> list[list[WireTensor]]:
    """Each output cut along dimension 0 into every request's rows."""
    import torch

    from handlers.arrays import array_tensor

    split: list[list[WireTensor]] = [[] for _ in rows]
    total = sum(rows)
    for name, output in result.items():
        value = output if isinstance(output, list | torch.Tensor) else torch.as_tensor(output)
        length = len(value) if isinstance(value, list) else (value.shape[0] if value.dim() else -1)
        if length != total:
            raise RowMismatch(f"output {name} has {length} rows for {total} input rows")
        start = 0
        for idx, count in enumerate(rows):
            part = value[start : start + count]
            start += count
            if isinstance(part, list):
                elements = [x if isinstance(x, bytes) else str(x).encode() for x in part]
                split[idx].append(WireTensor(name, "BYTES", (len(part),), elements))
            else:
                split[idx].append(array_tensor(name, part.detach().cpu().numpy()))
    return split


def _uneven_rows(inputs: Sequence[WireTensor]) -> str:
    """Why the inputs cannot be batched along dimension 0 together ("" when they can)."""
    first = inputs[0]
    for wire in inputs[1:]:
        if wire.rows != first.rows:
            return (
                f"input {wire.name} has {wire.rows} rows (dimension 0), input {first.name} "
                f"has {first.rows}: a tensor handler needs the same number in every input"
            )
    return ""
