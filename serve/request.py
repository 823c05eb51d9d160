"""One queued inference request: its inputs, its future, and its stream of later chunks."""

from __future__ import annotations

import asyncio
import itertools
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
    """

    __slots__ = (
        "arrival",
        "deadline",
        "dispatched",
        "future",
        "headers",
        "items",
        "kind",
        "params",
        "payload",
        "request_id",
        "solo",
        "stream",
        "timer",
    )

    def __init__(
        self,
        request_id: str,
        params: tuple[Param, ...],
        headers: tuple[tuple[str, str], ...],
        loop: asyncio.AbstractEventLoop,
        *,
        solo: bool = False,
        deadline: Deadline | None = None,
        kind: int = 0,
        payload: object = None,
        items: int = 1,
    ) -> None:
        self.request_id = request_id
        self.params = params
        self.headers = headers
        self.solo = solo
        self.kind = kind
        self.payload = payload
        self.items = items
        self.arrival = time.monotonic()
        self.dispatched = 0.0  # set when the batcher hands it to an executor
        self.future: asyncio.Future[Output] = loop.create_future()
        self.stream: asyncio.Queue[Output | ServeError] | None = None
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        """Answered, failed or cancelled: it must not reach a handler any more."""
        return self.future.done()

    def deliver(self, output: Output) -> None:
        """Hand one output to the waiting client (runs on the event loop)."""
        if not self.future.done():
            if not output.final:
                self.stream = asyncio.Queue()
            self.future.set_result(output)
        elif self.stream is not None:
            self.stream.put_nowait(output)
        if output.final and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def fail(self, error: ServeError) -> None:
        """Answer with an error, or end a started stream with it (runs on the event loop)."""
        if not self.future.done():
            self.future.set_exception(error)
        elif self.stream is not None:
            self.stream.put_nowait(error)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# Request ids are shaped like UUID4s: a random prefix drawn once per process, then a counter.
# Unique within the process (and the prefix differs between processes), for the price of an
# f-string rather than reading os.urandom on every request.
_ID_PREFIX = str(uuid.uuid4())[:24]
_ids = itertools.count()


def new_request_id() -> str:
    """A fresh request id."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFFFFFF:012x}"
