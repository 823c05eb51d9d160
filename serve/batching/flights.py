"""The batcher's in-flight ledger: which batches each executor holds, and how long they take.

Per executor, the running batch comes first, then the full batches waiting in its inbox (see
serve.batching.batcher for why full batches may wait there). The ledger also keeps the count
of requests inside executors and a moving average of a batch's run time, which sizes how many
full batches may wait. Everything here runs on the event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from serve.request import InferenceRequest

AHEAD_SECONDS = 0.002  # work that full batches waiting in a busy executor's inbox may add up to
MAX_AHEAD = 8  # full batches that may wait in one executor's inbox

Batch = list[InferenceRequest]


class Runner(Protocol):
    """What the batcher needs of an executor."""

    name: str
    retiring: bool

    def run(self, batch: list[InferenceRequest]) -> None: ...

    def stop(self) -> None: ...


@dataclass(slots=True)
class Flight:
    """A batch handed to an executor; `started` is set once the executor is on it."""

    batch: Batch
    started: float | None


class Flights:
    """The batches inside executors, per executor: the running one first, then those waiting."""

    def __init__(self) -> None:
        self._by_runner: dict[Runner, deque[Flight]] = {}
        self.count = 0  # requests inside executors (running or waiting in an inbox)
        self.batch_seconds = 0.0  # moving average of a batch's run time (0: none finished yet)

    def __bool__(self) -> bool:
        return bool(self._by_runner)

    def send(self, runner: Runner, batch: Batch, started: float | None) -> None:
        """Record `batch` as handed to `runner` (`started` None: it waits in the inbox)."""
        flights = self._by_runner.get(runner)
        if flights is None:
            flights = self._by_runner[runner] = deque()
        flights.append(Flight(batch, started))
        self.count += len(batch)

    def finish(self, runner: Runner, batch: Batch) -> Flight | None:
        """Take out `runner`'s running batch if it is `batch`; None when it is not there (it
        timed out and was answered already)."""
        flights = self._by_runner.get(runner)
        if not flights or flights[0].batch is not batch:
            return None
        self.count -= len(batch)
        return flights.popleft()

    def observe_run(self, seconds: float) -> None:
        """A batch ran for `seconds`: update the moving batch time."""
        average = self.batch_seconds
        self.batch_seconds = seconds if not average else 0.8 * average + 0.2 * seconds

    def start_next(self, runner: Runner, now: float) -> bool:
        """Mark `runner`'s next waiting batch as running; False (and forget the runner) when
        its inbox is empty."""
        flights = self._by_runner[runner]
        if flights:
            flights[0].started = now
            return True
        del self._by_runner[runner]
        return False

    def slot_for_full_batch(self) -> Runner | None:
        """A busy executor with room in its inbox for a full batch: the fewest batches
        waiting, then the one whose running batch started first.

        One batch may wait per executor; more while batches are short (as many as fit in
        AHEAD_SECONDS of the moving batch time, at most MAX_AHEAD)."""
        average = self.batch_seconds
        room = 1 if not average else max(1, min(MAX_AHEAD, int(AHEAD_SECONDS / average)))
        best: Runner | None = None
        best_key = (0, 0.0)
        for runner, flights in self._by_runner.items():
            waiting = len(flights) - 1
            if waiting >= room or runner.retiring:
                continue
            key = (waiting, flights[0].started or 0.0)
            if best is None or key < best_key:
                best, best_key = runner, key
        return best

    def stage_of(self, request: InferenceRequest) -> str:
        """ "queued" until a handler has its batch (in the queue or an executor's inbox)."""
        if not request.dispatched:
            return "queued"
        for flights in self._by_runner.values():
            for flight in flights:
                if request in flight.batch:
                    # an inbox batch is skipped by its executor (serve.workers.executor)
                    return "running" if flight.started is not None else "queued"
        return "running"

    def expired(self, now: float, timeout: float) -> list[Runner]:
        """The executors whose running batch started more than `timeout` seconds ago."""
        return [
            runner
            for runner, flights in self._by_runner.items()
            if flights[0].started is not None and now - flights[0].started > timeout
        ]

    def drop(self, runner: Runner) -> deque[Flight]:
        """Take out every batch `runner` holds (it is being replaced)."""
        flights = self._by_runner.pop(runner, deque())
        self.count -= sum(len(flight.batch) for flight in flights)
        return flights

    def requests(self) -> Iterator[InferenceRequest]:
        """Every request inside an executor."""
        for flights in self._by_runner.values():
            for flight in flights:
                yield from flight.batch

    def clear(self) -> None:
        """Forget every batch (they were all answered)."""
        self._by_runner.clear()
        self.count = 0
