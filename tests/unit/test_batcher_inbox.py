"""How many full batches may wait in a busy executor's inbox.

The Batcher runs on a real asyncio loop with the test's own executor, which holds every batch
it is handed until the test releases it (as an executor thread runs its inbox in order). Short
batches let several full batches wait behind a running one (a fast model's executor then never
sleeps between batches); long ones, or none finished yet, one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from handlers.messages import Output
from serve.batching.batcher import Batcher
from serve.batching.flights import MAX_AHEAD
from serve.request import InferenceRequest


@dataclass(eq=False)
class HeldExecutor:
    """Takes batches in order and finishes the oldest when `finish` is called."""

    batcher: Batcher
    name: str = "held"
    retiring: bool = False
    inbox: list[list[InferenceRequest]] = field(default_factory=list)

    def run(self, batch: list[InferenceRequest]) -> None:
        self.inbox.append(batch)

    def stop(self) -> None:
        pass

    def finish(self, run_seconds: float | None = None) -> None:
        batch = self.inbox.pop(0)
        answers = [Output(body=r.request_id.encode()) for r in batch]
        self.batcher.complete(self, batch, answers, run_seconds)


def _batcher(batch_size: int) -> Batcher:
    # not adaptive: a batch goes when full (or after max_batch_delay), so the counts are exact
    return Batcher(
        model="m",
        version="1",
        batch_size=batch_size,
        max_batch_delay_ms=5,
        queue_size=1000,
        response_timeout=60.0,
        on_stuck=lambda runner: None,
        adaptive=False,
    )


def _submit(batcher: Batcher, count: int, start: int) -> None:
    loop = asyncio.get_running_loop()
    for i in range(count):
        batcher.submit(InferenceRequest(f"r{start + i}", (), (), loop))


async def _after_batches_of(
    seconds: float, batch_size: int, reported: float | None = None
) -> tuple[HeldExecutor, Batcher]:
    """One executor that has run five full batches, each held `seconds` on the loop (none if
    0); `reported` is the run time the executor reports for each (None: it reports none)."""
    batcher = _batcher(batch_size)
    executor = HeldExecutor(batcher)
    batcher.capacity = 1
    batcher.idle(executor)
    for round_ in range(5):
        _submit(batcher, batch_size, start=round_ * batch_size)
        if seconds:
            await asyncio.sleep(seconds)
        executor.finish(reported)
    return executor, batcher


async def _first_burst() -> None:
    batcher = _batcher(1)
    executor = HeldExecutor(batcher)
    batcher.capacity = 1
    batcher.idle(executor)
    _submit(batcher, 20, start=0)
    # no batch has finished yet: the running one and one full batch behind it
    assert len(executor.inbox) == 2
    assert batcher.pending == 18


def test_before_any_batch_finished_one_full_batch_waits() -> None:
    asyncio.run(_first_burst())


async def _short_batches() -> None:
    executor, batcher = await _after_batches_of(0.0, batch_size=1)
    _submit(batcher, 20, start=100)
    # batches of microseconds: the running one and MAX_AHEAD full batches behind it
    assert len(executor.inbox) == 1 + MAX_AHEAD
    assert batcher.pending == 20 - 1 - MAX_AHEAD
    # every request is answered as the executor works through its inbox
    while executor.inbox:
        executor.finish()
    assert batcher.pending == 0
    assert batcher.in_flight == 0


def test_short_batches_let_several_full_batches_wait() -> None:
    asyncio.run(_short_batches())


async def _long_batches() -> None:
    executor, batcher = await _after_batches_of(0.02, batch_size=1)
    _submit(batcher, 20, start=100)
    # batches of 20 ms (more than the 2 ms of work that may wait): one behind the running one
    assert len(executor.inbox) == 2
    assert batcher.pending == 18


def test_long_batches_let_one_full_batch_wait() -> None:
    asyncio.run(_long_batches())


async def _partial() -> None:
    executor, batcher = await _after_batches_of(0.0, batch_size=4)
    _submit(batcher, 4 * 4 + 2, start=100)
    # four full batches go (one running, three waiting); the last two requests would make a
    # partial batch, which never waits behind a running one: waiting could still grow it
    assert len(executor.inbox) == 4
    assert all(len(batch) == 4 for batch in executor.inbox)
    assert batcher.pending == 2


def test_a_partial_batch_never_waits_in_an_inbox() -> None:
    asyncio.run(_partial())


async def _reported() -> None:
    # each batch comes back 20 ms after it was handed over (a busy loop, a slow wake-up), but
    # the executor ran it in 0.1 ms: its own measure decides
    executor, batcher = await _after_batches_of(0.02, batch_size=1, reported=0.0001)
    _submit(batcher, 20, start=100)
    assert len(executor.inbox) == 1 + MAX_AHEAD
    # and the other way round: quick on the loop, 20 ms in the executor
    executor, batcher = await _after_batches_of(0.0, batch_size=1, reported=0.02)
    _submit(batcher, 20, start=100)
    assert len(executor.inbox) == 2


def test_the_executors_own_run_time_decides_not_the_loops_lag() -> None:
    asyncio.run(_reported())
