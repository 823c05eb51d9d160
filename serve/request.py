"""One queued inference request: its inputs, its future, and its stream of later chunks."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import time
import uuid

from handlers.messages import Output, Param
from serve.deadline import Deadline
from serve.errors import ServeError

# A client's request id, and a token key: 1 to 200 printable ASCII characters, no blanks (so
# neither can break a log line or a header)
PRINTABLE_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


class InferenceRequest:
    """A request on its way through the batcher; answered exactly once through `future`.

    The first Output (or error) resolves `future`. A streaming handler's later chunks go to
    `stream`, created when the first chunk is not final. A `solo` request (a describe call:
    BaseHandler answers it for the whole batch) always runs in a batch of its own.
    A request with a `deadline` gets a `timer` from the batcher; it is cancelled once the
    request is finished (its final output or an error), so only a late request sees it fire.

    `items` is how many entries of the handler's batch the request fills (KServe v1 instances,
    rows of a tensor request; 1 for TorchServe's own APIs): the batcher counts them against
    batch_size. `kind` names the protocol (handlers.wire): a batch holds one kind only, and
    `payload` carries that protocol's parsed body.

    Under a step scheduler (generative models) a request stays in its executor's live set
    from step to step: `steps` counts the steps it took part in (0: its handler has not seen
    it yet, so it gets its inputs; later it gets `{}`, as TorchServe's continuous batching
    sends), and `finished` says it left for good (final output, error, or `cancel`).

    `client_headers` are what the client sent (REST headers, gRPC metadata); the handler's
    flags (`explain`, `url_path`, `sequence_id`, a shadow copy, a describe call) are typed
    fields, turned into TorchServe's request headers by `headers` alone.
    """

    __slots__ = (
        "abandoned",
        "arrival",
        "client_headers",
        "deadline",
        "describe",
        "dispatched",
        "echo_sequence",
        "explain",
        "finished",
        "future",
        "items",
        "kind",
        "params",
        "payload",
        "request_id",
        "sequence_end",
        "sequence_id",
        "sequence_start",
        "shadow",
        "solo",
        "steps",
        "stream",
        "timer",
        "url_path",
    )

    def __init__(
        self,
        request_id: str,
        params: tuple[Param, ...],
        client_headers: tuple[tuple[str, str], ...],
        loop: asyncio.AbstractEventLoop,
        *,
        solo: bool = False,
        deadline: Deadline | None = None,
        kind: int = 0,
        payload: object = None,
        items: int = 1,
        explain: bool = False,
        url_path: str = "",
        sequence_id: str | None = None,
        sequence_end: bool = False,
        describe: bool = False,
        shadow: bool = False,
    ) -> None:
        self.request_id = request_id
        self.params = params
        self.client_headers = client_headers
        self.solo = solo
        self.kind = kind
        self.payload = payload
        self.items = items
        self.explain = explain
        self.url_path = url_path
        self.sequence_id = sequence_id
        self.sequence_start = False  # the scheduler opened a sequence for it (a new id)
        # the client's last request of its sequence (gRPC's `ts_request_sequence_end` input)
        self.sequence_end = sequence_end
        self.echo_sequence = False  # a sequence batcher's: the answer carries the id header
        self.abandoned = False  # its stream ended early (client gone, error): no more chunks
        self.describe = describe
        self.shadow = shadow
        self.arrival = time.monotonic()
        self.dispatched = 0.0  # set when the batcher hands it to an executor
        self.future: asyncio.Future[Output] = loop.create_future()
        self.stream: asyncio.Queue[Output | ServeError] | None = None
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.steps = 0
        self.finished = False

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The request headers a handler sees: the client's, then TorchServe's flag headers
        (read on the executor thread; the flags win over a client header of the same name)."""
        flags = [("explain", "True" if self.explain else "False"), ("url_path", self.url_path)]
        if self.describe:
            flags.append(("describe", "True"))
        if self.sequence_id:
            flags.append((SEQUENCE_HEADER, self.sequence_id))
            if self.sequence_start:
                flags.append((SEQUENCE_START_HEADER, "true"))
            if self.sequence_end:
                flags.append((SEQUENCE_END_HEADER, "true"))
        if self.shadow:
            flags.append(SHADOW_HEADER)
        return (*self.client_headers, *flags)

    def copy(self, params: tuple[Param, ...], payload: object) -> InferenceRequest:
        """A shadow copy: a new id and future, `params` and `payload` of its own, no deadline."""
        return InferenceRequest(
            new_request_id(),
            params,
            self.client_headers,
            self.future.get_loop(),
            kind=self.kind,
            payload=payload,
            items=self.items,
            explain=self.explain,
            url_path=self.url_path,
            sequence_id=self.sequence_id,
            shadow=True,
        )

    @classmethod
    def describe_call(cls, loop: asyncio.AbstractEventLoop) -> InferenceRequest:
        """The describe request management sends a handler's describe_handle() (TorchServe
        sends it alone: the handler answers for the whole batch)."""
        body = (Param("body", "", bytearray()),)
        return cls(new_request_id(), body, (), loop, solo=True, describe=True)

    @property
    def done(self) -> bool:
        """Answered, failed or cancelled: it must not reach a handler any more.

        A streaming request whose first chunk resolved `future` is not done until its final
        chunk, an error, or `cancel` (read by executor threads too: a plain flag)."""
        return self.finished or (self.future.done() and self.stream is None)

    def cancel(self) -> None:
        """The client went away: nothing more reaches it, and a scheduler drops it at the
        next step (runs on the event loop)."""
        self.finished = True
        self.future.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def deliver(self, output: Output) -> None:
        """Hand one output to the waiting client (runs on the event loop)."""
        if self.finished:
            return  # cancelled or failed: a late chunk of a running step goes nowhere
        if output.final:
            self.finished = True
        if not self.future.done():
            if not output.final:
                self.stream = asyncio.Queue()
            if self.echo_sequence:
                output = _with_sequence_id(output, self.sequence_id)
            self.future.set_result(output)
        elif self.stream is not None:
            self.stream.put_nowait(output)
        if output.final and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def fail(self, error: ServeError) -> None:
        """Answer with an error, or end a started stream with it (runs on the event loop)."""
        if self.finished:
            return
        self.finished = True
        if not self.future.done():
            self.future.set_exception(error)
        elif self.stream is not None:
            self.stream.put_nowait(error)
            self.abandoned = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# TorchServe's header for a request's sequence id (gRPC `sequence_id`), renamable as there
SEQUENCE_HEADER = os.getenv("TS_REQUEST_SEQUENCE_ID", "ts_request_sequence_id")
SEQUENCE_START_HEADER = os.getenv("TS_REQUEST_SEQUENCE_START", "ts_request_sequence_start")
# as a handler's response header it ends the sequences it names ("id" or "id1;id2"); as a
# request header ("true") it tells the handler this request is its sequence's last
SEQUENCE_END_HEADER = os.getenv("TS_REQUEST_SEQUENCE_END", "ts_request_sequence_end")
SHADOW_HEADER = ("x-shadow", "true")  # marks a shadow copy for its handler

# Request ids are shaped like UUID4s: a random prefix drawn once per process, then a counter.
# Unique within the process (and the prefix differs between processes), for the price of an
# f-string rather than reading os.urandom on every request.
_ID_PREFIX = str(uuid.uuid4())[:24]
_ids = itertools.count()


def _with_sequence_id(output: Output, sid: str | None) -> Output:
    """A stateful answer carries its sequence id header (unless the handler set it already).

    Only the first output's headers reach a client (a streamed response's are its first
    chunk's), whether it came from the batch's result or an intermediate response."""
    if not sid or SEQUENCE_HEADER in output.headers:
        return output
    return dataclasses.replace(output, headers={**output.headers, SEQUENCE_HEADER: sid})


def new_request_id() -> str:
    """A fresh request id."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFFFFFF:012x}"


def request_id_for(given: str | None) -> str:
    """The one request-id rule of every door: the client's x-request-id when it is usable
    (REST header or gRPC metadata), else a fresh id."""
    if given is not None and PRINTABLE_ID.match(given):
        return given
    return new_request_id()
