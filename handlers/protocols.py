"""KServe v1 and Open Inference Protocol batches through a TorchServe handler.

A handler sees what TorchServe's `kserve` and `kservev2` envelopes hand it, one entry per
item: for v1 each instance of `{"instances": [...]}`; for v2 each input as the dict
`{"name", "shape", "datatype", "data"}`, its data a nested list shaped by `shape` (BYTES: its
first element, as the envelope does). The concatenation over every request of the batch is one
call, and the returned list is split back so each request gets exactly its own answers
(TorchServe's envelopes read only the first request of a batch). A v2 answer is wrapped as the
envelope wraps it: output i is named after input i and carries the flattened value; a value
that is neither a number nor a string (a dict, say) is a BYTES element of JSON text, which REST
renders as the JSON value itself. A request whose status the handler set to 4xx or 5xx (a
handlers.request_errors rejection, say) is answered as an error with the handler's message,
never as a prediction. A handlers.tensor.TensorHandler takes OIP batches its own way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson

from handlers.arrays import JSON_OPTIONS, UnsupportedValue, as_lists, flat_tensor, jsonable
from handlers.context import RequestProcessor
from handlers.messages import BatchFailure, HandlerRequest, Output
from handlers.wire import (
    KIND_OIP,
    KIND_V1,
    Instances,
    TensorRequest,
    TensorResult,
    WireTensor,
)

if TYPE_CHECKING:
    from handlers.service import IntermediateSink, Service

logger = logging.getLogger(__name__)


def predict(
    service: Service, batch: Sequence[HandlerRequest], on_intermediate: IntermediateSink
) -> list[Output] | BatchFailure:
    """Run a batch of one protocol kind (v1 or OIP) through the service's handler."""
    kind = batch[0].kind
    name = service.context.model_name
    if service.tensor_handler is not None:
        if kind != KIND_OIP:
            return BatchFailure(
                400,
                f"Model {name} takes named tensors: use the Open Inference Protocol "
                f"(POST /v2/models/{name}/infer)",
            )
        from handlers import tensor  # torch, only on the executor side

        return tensor.predict(service, batch)
    if kind == KIND_V1:
        return _instances(service, batch)
    return _tensors_as_lists(service, batch)


def _run_entries(
    service: Service,
    batch: Sequence[HandlerRequest],
    entries: Callable[[HandlerRequest], Iterable[Any]],
) -> tuple[list[Any], list[RequestProcessor]] | BatchFailure:
    """One handler call over every request's entries; results and processors align by entry."""
    data: list[Any] = []
    processors: list[RequestProcessor] = []
    ids: dict[int, str] = {}
    for request in batch:
        processor = RequestProcessor(dict(request.headers))
        for entry in entries(request):
            ids[len(data)] = request.request_id
            processors.append(processor)
            data.append(entry)
    result = service.invoke_list(data, processors, ids, _no_stream)
    if isinstance(result, BatchFailure):
        return result
    return result, processors


def _instances(service: Service, batch: Sequence[HandlerRequest]) -> list[Output] | BatchFailure:
    ran = _run_entries(service, batch, lambda r: cast(Instances, r.payload).instances)
    if isinstance(ran, BatchFailure):
        return ran
    result, processors = ran
    outputs: list[Output] = []
    start = 0
    try:
        for request in batch:
            payload = cast(Instances, request.payload)
            end = start + len(payload.instances)
            processor = processors[start]
            if processor.get_response_status_code() >= 400:
                message = error_message(result[start:end])
                outputs.append(_output(processor, message.encode("utf-8")))
                start = end
                continue
            key = "explanations" if payload.explain else "predictions"
            body = orjson.dumps({key: result[start:end]}, default=jsonable, option=JSON_OPTIONS)
            outputs.append(_output(processors[start], body))
            start = end
    except TypeError as exc:
        return BatchFailure(503, "Unsupported model output data type.", detail=str(exc))
    return outputs


def _tensors_as_lists(
    service: Service, batch: Sequence[HandlerRequest]
) -> list[Output] | BatchFailure:
    ran = _run_entries(
        service, batch, lambda r: map(as_input, cast(TensorRequest, r.payload).inputs)
    )
    if isinstance(ran, BatchFailure):
        return ran
    result, processors = ran
    outputs: list[Output] = []
    start = 0
    try:
        for request in batch:
            inputs = cast(TensorRequest, request.payload).inputs
            values = result[start : start + len(inputs)]
            processor = processors[start]
            status = processor.get_response_status_code()
            if status >= 400:
                failed = TensorResult(error=error_message(values), status=status)
                outputs.append(_output(processor, b"", failed))
                start += len(inputs)
                continue
            wires = tuple(flat_tensor(t.name, v) for t, v in zip(inputs, values, strict=True))
            outputs.append(_output(processors[start], b"", TensorResult(wires)))
            start += len(inputs)
    except UnsupportedValue as exc:
        return BatchFailure(503, "Unsupported model output data type.", detail=str(exc))
    return outputs


def as_input(tensor: WireTensor) -> dict[str, Any]:
    """What the kservev2 envelope hands a handler for one input: the input's JSON object."""
    entry: dict[str, Any] = {
        "name": tensor.name,
        "shape": list(tensor.shape),
        "datatype": tensor.datatype,
        "data": as_lists(tensor),
    }
    if tensor.parameters:
        entry["parameters"] = dict(tensor.parameters)
    return entry


def error_message(values: Sequence[Any]) -> str:
    """The message of a request the handler failed: its error dict's, else its text."""
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return cast(str, value["message"])
    for value in values:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes | bytearray):
            return value.decode("utf-8", errors="replace")
    try:
        return orjson.dumps(list(values), default=jsonable, option=JSON_OPTIONS).decode()
    except TypeError:
        return "The handler failed the request"


def _output(
    processor: RequestProcessor, body: bytes, tensors: TensorResult | None = None
) -> Output:
    return Output(
        body=body,
        status=processor.get_response_status_code(),
        reason=processor.get_response_status_phrase() or "",
        headers=dict(processor.get_response_headers()),
        content_type="application/json",
        tensors=tensors,
    )


def _no_stream(idx: int, output: Output) -> None:
    """KServe protocols answer once; a handler's intermediate responses are dropped."""
    logger.debug("dropping an intermediate response for batch entry %d", idx)
