"""The one inference path every front door calls: a `Call` in, an `Answer` (or an error) out.

A door parses its wire format into a Call and renders what comes back; everything between
happens here, once: routing (the version named, else the model's traffic split, else the
default), the request id rule, the deadline, the one queued InferenceRequest, shadow copies
of a routed request, the request's clock and its metrics. A ServeError raised once a version
is chosen names that version (`error.model_version`), which the REST guards and the gRPC
gate render as `X-Model-Version` / trailing `x-model-version`, as they do for answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from handlers.messages import Output, Param
from handlers.wire import KIND_OIP, KIND_TORCHSERVE, KIND_V1, Instances, TensorRequest
from serve.deadline import HEADER_SOURCE, choose, header_timeout
from serve.errors import ServeError
from serve.models.registry import Registry, Route
from serve.models.tensors import check_inputs, check_outputs
from serve.models.version import ModelVersion
from serve.request import InferenceRequest, request_id_for

# What a door hands over: TorchServe's handler parameters, KServe v1 instances, or an OIP
# tensor request. A door whose body is read (or checked) only once the version is known
# passes a reader, so that a bad body's error names the version too.
Payload = tuple[Param, ...] | Instances | TensorRequest
Reader = Callable[[], Awaitable[Payload]]


@dataclass(frozen=True, slots=True)
class Call:
    """One inference call as a door parsed it; no aiohttp or grpclib objects in here."""

    model: str
    version: str | None  # named by the client; None: the model's route decides
    routing_key: str | None
    payload: Payload | Reader
    client_request_id: str | None  # the client's x-request-id (used when valid)
    headers: tuple[tuple[str, str], ...]  # the client's, as the handler sees them
    timeout_header: str | None = None  # REST's X-Request-Timeout, parsed here
    call_timeout: float | None = None  # seconds left of a gRPC call's deadline
    timeout_source: str = HEADER_SOURCE
    explain: bool = False
    url_path: str = ""
    sequence_id: str | None = None
    sequence_end: bool = False  # the client's last request of its sequence (gRPC's input key)
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's answer: the version that gave it, the request id, and its outputs."""

    version: ModelVersion
    request_id: str
    first: Output
    request: InferenceRequest

    def chunks(self) -> AsyncIterator[Output]:
        """Every output in order, `first` to the final one (a broken stream raises)."""
        return chunks(self.request, self.first, self.version.version)

    async def last(self) -> Output:
        """The final output (protocols that answer once wait for a streaming handler)."""
        output = self.first
        async for output in self.chunks():  # noqa: B007 (the last one is wanted)
            pass
        return output

    def naming(self) -> naming:
        """A ServeError a door raises while rendering this answer names its version too."""
        return naming(self.version)


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued call whose answer is awaited later (StreamPredictions2 answers in order)."""

    route: Route
    call: Call
    request: InferenceRequest

    async def answer(self) -> Answer:
        """Wait for the first output; see `first_output`."""
        version = self.route.version
        with naming(version):
            first = await first_output(version, self.request, self.call)
        return Answer(version, self.request.request_id, first, self.request)


async def infer(registry: Registry, call: Call) -> Answer:
    """Route, queue and await one call."""
    route = registry.route(call.model, call.version, call.routing_key)
    with naming(route.version):
        payload = call.payload
        if not isinstance(payload, tuple | Instances | TensorRequest):
            payload = await payload()
        pending = _queue(registry, route, call, payload)
    return await pending.answer()


def queue(registry: Registry, call: Call) -> Pending:
    """Route and queue a call whose payload is parsed already; await `Pending.answer` later."""
    route = registry.route(call.model, call.version, call.routing_key)
    payload = call.payload
    assert isinstance(payload, tuple | Instances | TensorRequest)  # no reader here
    with naming(route.version):
        return _queue(registry, route, call, payload)


def queue_all(
    registry: Registry,
    call: Call,
    payloads: Sequence[Payload],
    accept: Callable[[ModelVersion], None] | None = None,
) -> list[Pending]:
    """Route once and queue one request per payload (the choices of one OpenAI call).

    `accept` may refuse the routed version (raise a ServeError) before anything is queued.
    The client's request id goes to the first request only (ids key a handler's state). If
    one cannot be queued, those already queued are cancelled and the error raised."""
    route = registry.route(call.model, call.version, call.routing_key)
    pendings: list[Pending] = []
    with naming(route.version):
        if accept is not None:
            accept(route.version)
        try:
            for i, payload in enumerate(payloads):
                one = call if i == 0 else dataclasses.replace(call, client_request_id=None)
                pendings.append(_queue(registry, route, one, payload))
        except BaseException:
            for pending in pendings:
                pending.request.cancel()
            raise
    return pendings


def _queue(registry: Registry, route: Route, call: Call, payload: Payload) -> Pending:
    version = route.version
    client = header_timeout(call.timeout_header) if call.call_timeout is None else None
    client = call.call_timeout if call.call_timeout is not None else client
    deadline = choose(call.started, client, call.timeout_source, registry.config.max_request_time)
    params: tuple[Param, ...] = ()
    if isinstance(payload, Instances):
        kind, items = KIND_V1, len(payload.instances)
    elif isinstance(payload, TensorRequest):
        check_inputs(payload.inputs, version.signature)
        check_outputs(payload.outputs, version.signature)
        kind, items = KIND_OIP, max(1, payload.inputs[0].rows)
    else:
        kind, items, params = KIND_TORCHSERVE, 1, payload
    request = InferenceRequest(  # the one place a client's request is made
        request_id_for(call.client_request_id),
        params,
        call.headers,
        asyncio.get_running_loop(),
        deadline=deadline,
        kind=kind,
        payload=None if kind == KIND_TORCHSERVE else payload,
        items=items,
        explain=call.explain,
        url_path=call.url_path,
        sequence_id=call.sequence_id,
        sequence_end=call.sequence_end,
    )
    route.submit(request)
    return Pending(route, call, request)


async def first_output(version: ModelVersion, request: InferenceRequest, call: Call) -> Output:
    """Wait for a queued request's first output (raises its ServeError) and count the call.

    A caller that goes away cancels the request's future, so the batcher drops the request
    before it reaches a handler.
    """
    ok = False
    try:
        output = await request.future
        ok = output.status < 400
        return output
    except asyncio.CancelledError:
        request.future.cancel()
        raise
    finally:
        queued = (request.dispatched - request.arrival) if request.dispatched else 0.0
        version.metrics.answered(call.version, time.monotonic() - call.started, queued, ok)


async def chunks(
    request: InferenceRequest, first: Output, version: str | None = None
) -> AsyncIterator[Output]:
    """Every output of a request in order, `first` to the final one.

    A stream that breaks after its first chunk raises the ServeError that ended it (naming
    `version`). A reader that stops early (its client went away: the task is cancelled, or
    the door closes the iterator) cancels the request, so a step scheduler drops it.
    """
    yield first
    if first.final:
        return
    stream = request.stream
    assert stream is not None  # created by InferenceRequest.deliver for a non-final output
    finished = False
    try:
        while True:
            item = await stream.get()
            if isinstance(item, ServeError):
                finished = True
                if version is not None and item.model_version is None:
                    item.model_version = version
                raise item
            yield item
            if item.final:
                finished = True
                return
    finally:
        # the client went away mid-stream: a continuous scheduler drops it at the next step
        request.abandoned = not finished
        if not request.finished:
            request.cancel()


class naming:
    """Name `version` on a ServeError raised inside (the first version named stays).

    A class rather than a generator context manager: it wraps every call twice."""

    __slots__ = ("_version",)

    def __init__(self, version: ModelVersion) -> None:
        self._version = version

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if isinstance(error, ServeError) and error.model_version is None:
            error.model_version = self._version.version
