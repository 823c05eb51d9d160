"""The open sequences of one model version, who owns them, and the ids that ended.

A sequence stays on the executor that ran its first request; a new one goes to the ready
executor owning the fewest. A sequence ends when it is idle past sequenceMaxIdleMSec, when
sequenceTimeoutMSec has passed since it opened, when a handler ends it, or when its executor
is gone. Its id is then remembered (the newest `REMEMBERED`), so a request naming it is
answered 503 saying why, rather than opening a sequence whose handler state is missing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from serve.batching.flights import Runner
from serve.batching.sequence_policy import SequenceSettings
from serve.errors import ServiceUnavailable
from serve.request import SEQUENCE_HEADER, InferenceRequest

logger = logging.getLogger(__name__)

REMEMBERED = 10_000  # ended ids kept to answer a late request with why (oldest forgotten)


@dataclass(eq=False, slots=True)
class Sequence:
    """One open sequence: its executor, its queued requests and its two timers."""

    id: str
    runner: Runner | None  # None until its first request is given to an executor
    queue: deque[InferenceRequest] = field(default_factory=deque)
    running: int = 0  # its requests inside the executor (plain: 0 or 1)
    idle_timer: asyncio.TimerHandle | None = None
    life_timer: asyncio.TimerHandle | None = None


class SequenceTable:
    """Open sequences by id, the executors' shares of them, and the ended ids with why."""

    def __init__(
        self,
        *,
        label: str,
        settings: SequenceSettings,
        loop: asyncio.AbstractEventLoop,
        on_end: Callable[[], None],
    ) -> None:
        self._label = label
        self._settings = settings
        self._loop = loop
        self._on_end = on_end  # the batcher re-checks whether it has drained
        self._sequences: dict[str, Sequence] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # id → why it ended
        self._owned: dict[Runner, int] = {}  # executors seen ready → their live sequences

    def __len__(self) -> int:
        return len(self._sequences)

    def __iter__(self) -> Iterator[Sequence]:
        return iter(self._sequences.values())

    def get(self, sid: str | None) -> Sequence | None:
        """The open sequence of that id, if any."""
        return self._sequences.get(sid or "")

    def seen(self, runner: Runner) -> None:
        """An executor is ready: it may be given new sequences."""
        self._owned.setdefault(runner, 0)

    def claim(self, sequence: Sequence, runner: Runner) -> None:
        """A new sequence stays on the executor that runs its first request."""
        sequence.runner = runner
        self._owned[runner] = self._owned.get(runner, 0) + 1

    def open_for(self, request: InferenceRequest) -> Sequence:
        """The request's sequence: an open one, or a new one (503 past maxNumSequence)."""
        sid = request.sequence_id
        if sid:
            why = self._ended.get(sid)
            if why is not None:
                raise ServiceUnavailable(
                    f'{self._label}: sequence "{sid}" {why}; start a new sequence by sending '
                    f"no {SEQUENCE_HEADER}"
                )
            sequence = self._sequences.get(sid)
            if sequence is not None:
                return sequence
        limit = self._settings.max_sequences
        if len(self._sequences) >= limit:
            raise ServiceUnavailable(
                f"{self._label} has {limit} live sequences (maxNumSequence); end one or retry "
                "when one expires",
                headers={"Retry-After": "1"},
            )
        if not sid:  # TorchServe's rule: a new server id comes with the start header
            sid = request.sequence_id = f"ts-seq-{uuid.uuid4()}"
            request.sequence_start = True
        sequence = self._sequences[sid] = Sequence(sid, self._least_loaded())
        if sequence.runner is not None:
            self._owned[sequence.runner] += 1
        if self._settings.timeout is not None:
            sequence.life_timer = self._loop.call_later(
                self._settings.timeout, self.end, sequence, "timed out (sequenceTimeoutMSec)"
            )
        return sequence

    def _least_loaded(self) -> Runner | None:
        """The ready executor with the fewest sequences (None before any is ready)."""
        owned = [(count, i, r) for i, (r, count) in enumerate(self._owned.items())]
        live = [item for item in owned if not item[2].retiring]
        return min(live, key=lambda item: (item[0], item[1]))[2] if live else None

    def maybe_idle(self, sequence: Sequence) -> None:
        """Nothing queued or running: start the sequence's idle timer."""
        if sequence.running or sequence.queue or sequence.id not in self._sequences:
            return
        cancel(sequence.idle_timer)
        sequence.idle_timer = self._loop.call_later(
            self._settings.max_idle, self.end, sequence, "expired (idle past sequenceMaxIdleMSec)"
        )

    def end(self, sequence: Sequence, why: str) -> None:
        """Close a sequence: queued requests are refused, running ones finish."""
        if self._sequences.get(sequence.id) is not sequence:
            return
        del self._sequences[sequence.id]
        cancel(sequence.idle_timer)
        cancel(sequence.life_timer)
        if sequence.runner is not None and sequence.runner in self._owned:
            self._owned[sequence.runner] -= 1
        self._ended[sequence.id] = why
        while len(self._ended) > REMEMBERED:
            self._ended.popitem(last=False)
        logger.info("%s: sequence %s %s", self._label, sequence.id, why)
        if sequence.queue:
            error = ServiceUnavailable(f'{self._label}: sequence "{sequence.id}" {why}')
            while sequence.queue:
                sequence.queue.popleft().fail(error)
        self._on_end()

    def lose(self, runner: Runner, why: str) -> None:
        """An executor is gone: end its sequences (their state went with it)."""
        self._owned.pop(runner, None)
        for sequence in [s for s in self._sequences.values() if s.runner is runner]:
            self.end(sequence, why)


def cancel(handle: asyncio.TimerHandle | None) -> None:
    """Cancel a timer that may not be set."""
    if handle is not None:
        handle.cancel()
