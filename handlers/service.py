"""Runs one batch through a handler, as TorchServe's backend `Service.predict` does.

Inputs are decoded here (JSON, text, else a bytearray), in the executor thread rather than on
the event loop. Outputs are serialized here: bytes as they are, str as UTF-8, a tensor with
`torch.save`, anything else as indented JSON. A handler failure becomes one `BatchFailure`
for the whole batch, with TorchServe's status codes.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from handlers.context import Context, RequestProcessor
from handlers.errors import PredictionException
from handlers.messages import BatchFailure, HandlerRequest, KVUsage, Output, Param
from handlers.wire import Signature

logger = logging.getLogger(__name__)

Entry = Callable[[Any, Context], Any]
IntermediateSink = Callable[[int, Output], None]

_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


class UnsupportedOutput(TypeError):
    """A handler returned a value that cannot be serialized."""


def decode_param(param: Param) -> Any:
    """TorchServe's backend decoding: JSON parsed, text decoded, else the raw bytearray."""
    value = param.value
    content_type = param.content_type
    if content_type == "application/json":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            try:
                return json.loads(value)
            except ValueError:
                return value
    if content_type.startswith("text"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def serialize(value: Any) -> tuple[bytes | bytearray, str | None]:
    """The response body for one handler result, and the content type it implies."""
    if isinstance(value, bytes | bytearray):
        return value, None
    if isinstance(value, str):
        return value.encode("utf-8"), TEXT_CONTENT_TYPE
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        buffer = io.BytesIO()
        torch.save(value, buffer)
        return buffer.getvalue(), "application/octet-stream"
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS), JSON_CONTENT_TYPE
    except TypeError:
        pass
    try:
        return json.dumps(value, indent=2).encode("utf-8"), JSON_CONTENT_TYPE
    except (TypeError, ValueError) as exc:
        raise UnsupportedOutput(f"cannot serialize {type(value).__name__}: {exc}") from exc


class Service:
    """A loaded handler with its long-lived context; `predict` runs one batch.

    `tensor_handler` is set when the handler is a handlers.tensor.TensorHandler; `signature`
    holds the inputs and outputs it declares (published to the server once loaded).
    """

    def __init__(self, entry: Entry, context: Context, tensor_handler: Any = None) -> None:
        self._entry = entry
        self.context = context
        self.tensor_handler = tensor_handler
        self.signature: Signature | None = getattr(tensor_handler, "signature", None)
        # requests may stay for another call (TorchServe's continuous batching): a handler's
        # `context.stopping_criteria[idx](result)` says False to keep the request streaming
        self.iterative = False
        # time inside the handler's calls, summed: the executor subtracts it from a batch's
        # time for TorchServe's WorkerThreadTime (the server's own share of the batch)
        self.handler_seconds = 0.0
        # step scheduling (handlers.steps): the handler's optional `release_sequences(ids)`
        # frees the state of sequences that left without a final output
        self.continuous = False
        self.releaser: Callable[[list[str]], Any] | None = None
        # and its optional `kv_cache_usage()`: its KV cache after a step, for the gauges
        self.kv_probe: Callable[[], KVUsage | None] | None = None

    def kv_usage(self) -> KVUsage | None:
        """The handler's KV cache figures now (None: it reports none, or reporting failed)."""
        if self.kv_probe is None:
            return None
        try:
            usage = self.kv_probe()
        except Exception:
            logger.warning(
                "Model %s: kv_cache_usage() failed", self.context.model_name, exc_info=True
            )
            self.kv_probe = None  # once is enough to know
            return None
        return usage if isinstance(usage, KVUsage) else None

    def release(self, request_ids: list[str]) -> None:
        """Tell the handler these sequences left (client gone, deadline passed)."""
        if self.releaser is None or not request_ids:
            return
        try:
            self.releaser(request_ids)
        except Exception:
            logger.warning(
                "Model %s: releasing sequences failed", self.context.model_name, exc_info=True
            )

    def predict(
        self, batch: Sequence[HandlerRequest], on_intermediate: IntermediateSink
    ) -> list[Output] | BatchFailure:
        """Run the handler on a TorchServe batch: one Output per request, or one failure for all.

        KServe and OIP batches go through their adapters instead (handlers.batch.run_batch)."""
        data, processors, ids = batch_inputs(batch)
        context = self.context
        if self.iterative:
            context.stopping_criteria = None  # each call's own, as the handler sets it
        result = self.invoke_list(data, processors, ids, on_intermediate)
        if isinstance(result, BatchFailure):
            return result
        try:
            return [
                make_output(context, idx, value, final=self._final(idx, value))
                for idx, value in enumerate(result)
            ]
        except UnsupportedOutput as exc:
            logger.warning("Model %s: %s", context.model_name, exc)
            return BatchFailure(503, "Unsupported model output data type.", detail=str(exc))

    def _final(self, idx: int, value: Any) -> bool:
        """TorchServe's rule: criteria True ends a stream, False continues it, None answers."""
        criteria = self.context.stopping_criteria if self.iterative else None
        if not criteria or idx >= len(criteria):
            return True
        return criteria[idx](value) is not False

    def invoke(
        self,
        entry: Entry,
        data: Any,
        processors: list[RequestProcessor],
        ids: dict[int, str],
        on_intermediate: IntermediateSink | None,
    ) -> Any:
        """Call `entry(data, context)` with the batch's context; a failure is a BatchFailure."""
        context = self.context
        context.request_ids = ids
        context.request_processor = processors
        metrics = context.metrics
        if metrics is not None:
            metrics.request_ids = ids
        context.intermediate_sender = on_intermediate
        started = time.time()
        clock = time.perf_counter()
        try:
            result = entry(data, context)
        except MemoryError:
            logger.error("Model %s: out of memory", context.model_name, exc_info=True)
            return BatchFailure(507, "Out of resources")
        except PredictionException as exc:
            logger.warning("Model %s: prediction error %s", context.model_name, exc, exc_info=True)
            return BatchFailure(exc.error_code, exc.message)
        except Exception as exc:
            if _is_device_oom(exc):
                logger.error("Model %s: device out of memory", context.model_name, exc_info=True)
                return BatchFailure(507, "Out of resources")
            logger.warning(
                "Model %s: invoking the handler failed", context.model_name, exc_info=True
            )
            return BatchFailure(503, "Prediction failed", detail=f"{type(exc).__name__}: {exc}")
        finally:
            context.intermediate_sender = None
            self.handler_seconds += time.perf_counter() - clock
        if metrics is not None:  # TorchServe's backend records this for every handled batch
            metrics.add_time("PredictionTime", round((time.time() - started) * 1000, 2))
        return result

    def invoke_list(
        self,
        data: list[Any],
        processors: list[RequestProcessor],
        ids: dict[int, str],
        on_intermediate: IntermediateSink | None,
    ) -> list[Any] | BatchFailure:
        """`handle(data, context)` held to TorchServe's rule: one result per entry of `data`."""
        result = self.invoke(self._entry, data, processors, ids, on_intermediate)
        if isinstance(result, BatchFailure):
            return result
        failure = self.check_list(result, len(data))
        return result if failure is None else failure

    def check_list(self, result: Any, expected: int) -> BatchFailure | None:
        """TorchServe's rule: a handler answers a batch with a list of the same length."""
        name = self.context.model_name
        if not isinstance(result, list):
            logger.warning(
                "Model %s: the handler returned %s, not a list", name, type(result).__name__
            )
            return BatchFailure(503, "Invalid model predict output")
        if len(result) != expected:
            logger.warning(
                "Model %s: number of batch response mismatched, expect: %d, got: %d",
                name,
                expected,
                len(result),
            )
            return BatchFailure(
                503,
                "number of batch response mismatched",
                detail=f"expected {expected} results, got {len(result)}",
            )
        return None


def make_output(
    context: Context, idx: int, value: Any, *, final: bool, criterion: bool = False
) -> Output:
    """One request's response from its handler result and what the handler set on the context.

    `criterion`: a stopping criterion decided `final`, so the header says so either way, as
    TorchServe's create_predict_response sets it."""
    processors = context.request_processor
    assert processors is not None
    processor = processors[idx]
    headers = processor.get_response_headers()
    if not final:
        headers["ts_stream_next"] = "true"
    elif criterion or headers.get("ts_stream_next") == "true":
        headers["ts_stream_next"] = "false"
    body, implied_type = serialize(value)
    content_type = headers.get("content-type") or implied_type
    extra = {k: v for k, v in headers.items() if k.lower() != "content-type"} if headers else {}
    return Output(
        body=bytes(body) if isinstance(body, bytearray) else body,
        status=processor.get_response_status_code(),
        reason=processor.get_response_status_phrase() or "",
        headers=extra,
        content_type=content_type,
        final=final,
    )


def batch_inputs(
    batch: Sequence[HandlerRequest], continuing: Sequence[bool] = ()
) -> tuple[list[dict[str, Any]], list[RequestProcessor], dict[int, str]]:
    """The handler's `data`, one RequestProcessor per request, and `context.request_ids`.

    A `continuing` request (a step scheduler's, after its first step) gets `{}` with its
    headers, as TorchServe's continuous batching sends it."""
    data: list[dict[str, Any]] = []
    processors: list[RequestProcessor] = []
    ids: dict[int, str] = {}
    for idx, request in enumerate(batch):
        inputs: dict[str, Any] = {}
        headers: dict[str, Any] = {}
        skip = bool(continuing) and continuing[idx]
        for param in request.params:
            if not skip:
                inputs[param.name] = decode_param(param)
            headers[param.name] = {"content-type": param.content_type}
        for name, value in request.headers:
            headers[name] = value
        data.append(inputs)
        processors.append(RequestProcessor(headers))
        ids[idx] = request.request_id
    return data, processors, ids


def _is_device_oom(exc: Exception) -> bool:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)
