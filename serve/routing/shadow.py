"""The shadow copies a model's traffic split sends.

Once a request routed by the split is queued, `shadow` copies it to the split's shadow
versions: each copy goes to the shadow version's batcher with at most `SHADOW_IN_FLIGHT`
copies outstanding per version (past that the copy is dropped and counted), and nothing
on the primary's path ever waits for a copy.
A copy keeps the request's protocol (TorchServe, KServe v1, OIP) with inputs of its own.
When both answers are in, the shadow's is compared with the primary's and counted; the
shadow's answer goes nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import orjson

from handlers.messages import Output, Param
from handlers.wire import Instances, TensorRequest, TensorResult, WireTensor
from serve.errors import ServeError
from serve.request import InferenceRequest
from serve.routing.split import Split
from serve.telemetry.metrics import ModelMetrics

logger = logging.getLogger(__name__)

# Copies waiting or running per shadow version: the shadow's own bounded queue, so a slow or
# stuck shadow costs at most this many queue slots of its batcher and never a primary request.
SHADOW_IN_FLIGHT = 64
# Answers larger than this are compared byte for byte: parsing them on the loop would block it.
_MAX_JSON_COMPARE = 1 << 20


class Queue(Protocol):
    """What a shadow copy is submitted to (a version's batcher)."""

    def submit(self, request: InferenceRequest) -> None: ...


class Target(Protocol):
    """A model version as shadowing sees it (serve.models.version.ModelVersion)."""

    @property
    def version(self) -> str: ...

    @property
    def batcher(self) -> Queue: ...

    @property
    def metrics(self) -> ModelMetrics: ...


class Shadows:
    """The shadow copies of one model, over `versions` (the registry's dict of its versions)."""

    def __init__(self, versions: Mapping[str, Target]) -> None:
        self._versions = versions
        self._in_flight: dict[Target, int] = {}

    def shadow(self, job: InferenceRequest, primary: Target, split: Split) -> None:
        """Copy a queued routed request to the shadow versions `split` draws for it."""
        for name in split.shadows_for(primary.version):
            target = self._versions.get(name)
            if target is not None:
                self._send(job, target)

    def _send(self, job: InferenceRequest, target: Target) -> None:
        figures = target.metrics
        in_flight = self._in_flight.get(target, 0)
        if in_flight >= SHADOW_IN_FLIGHT:
            figures.shadow_dropped += 1
            return
        # a handler may change a bytearray input in place: the copy gets its own
        params = tuple(
            Param(p.name, p.content_type, bytearray(p.value))
            if isinstance(p.value, bytearray)
            else p
            for p in job.params
        )
        copy = job.copy(params, _own_payload(job.payload))
        try:
            target.batcher.submit(copy)
        except ServeError:  # full queue, no worker, being unregistered: the copy is dropped
            figures.shadow_dropped += 1
            return
        self._in_flight[target] = in_flight + 1
        started = time.monotonic()
        copy.future.add_done_callback(lambda done: self._answered(done, job, target, started))

    def _answered(
        self,
        done: asyncio.Future[Output],
        primary: InferenceRequest,
        target: Target,
        started: float,
    ) -> None:
        left = self._in_flight.get(target, 1) - 1
        if left > 0:
            self._in_flight[target] = left
        else:
            self._in_flight.pop(target, None)
        figures = target.metrics
        figures.shadow_seconds.observe(time.monotonic() - started)
        shadow = _output(done)
        if shadow is None or shadow.status >= 400 or _tensor_error(shadow):
            figures.shadow_error += 1
            return
        figures.shadow_ok += 1
        if primary.future.done():
            _compare(primary.future, shadow, target)
        else:
            primary.future.add_done_callback(lambda answered: _compare(answered, shadow, target))


def _tensor_error(output: Output) -> bool:
    """An OIP answer that failed in band (its status rides in the tensor result)."""
    return output.tensors is not None and bool(output.tensors.error)


def _own_payload(payload: object) -> object:
    """A KServe v1 or OIP payload the shadow's handler may change without touching the
    primary's: instances re-parsed (they came from JSON), tensor buffers copied."""
    if isinstance(payload, Instances):
        return Instances(orjson.loads(orjson.dumps(payload.instances)), payload.explain)
    if isinstance(payload, TensorRequest):
        return replace(payload, inputs=tuple(_own_tensor(t) for t in payload.inputs))
    return payload


def _own_tensor(tensor: WireTensor) -> WireTensor:
    data = tensor.data
    return replace(tensor, data=list(data) if isinstance(data, list) else bytearray(data))


def _output(done: asyncio.Future[Output]) -> Output | None:
    """The answer of a finished future; None when it failed or was cancelled."""
    if done.cancelled() or done.exception() is not None:
        return None  # exception() also marks a shadow's failure as seen: nobody awaits it
    return done.result()


def _compare(primary: asyncio.Future[Output], shadow: Output, target: Target) -> None:
    answer = _output(primary) if primary.done() else None
    if answer is None or answer.status >= 400 or not answer.final or not shadow.final:
        return  # nothing to compare: the primary failed, or either one streams
    if answer.tensors is not None or shadow.tensors is not None:
        if answer.tensors is None or answer.tensors.error:
            return  # the primary's OIP request failed: nothing to compare
        target.metrics.count_agreement(_tensor_agreement(answer.tensors, shadow.tensors))
        return
    target.metrics.count_agreement(_agreement(answer.body, shadow.body))


def _tensor_agreement(primary: TensorResult, shadow: TensorResult | None) -> str:
    """OIP answers agree when every output has the same name, datatype, shape and data."""
    if shadow is None:
        return "different"
    if len(primary.outputs) != len(shadow.outputs):
        return "different"
    for mine, theirs in zip(primary.outputs, shadow.outputs, strict=True):
        same_kind = (mine.name, mine.datatype, mine.shape) == (
            theirs.name,
            theirs.datatype,
            theirs.shape,
        )
        if not same_kind or _data(mine) != _data(theirs):
            return "different"
    return "equal"


def _data(tensor: WireTensor) -> memoryview | list[bytes]:
    data = tensor.data
    return data if isinstance(data, list) else memoryview(data)  # compared without a copy


def _agreement(primary: bytes, shadow: bytes) -> str:
    if primary == shadow:
        return "equal"
    if len(primary) > _MAX_JSON_COMPARE or len(shadow) > _MAX_JSON_COMPARE:
        return "different"
    try:
        equal = orjson.loads(primary) == orjson.loads(shadow)
    except orjson.JSONDecodeError:
        return "not_json"
    return "equal" if equal else "different"
