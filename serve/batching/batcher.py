"""The per-model-version dynamic batcher: a bounded queue, executors, and dispatch.

Everything here runs on the event loop. A batch is formed when an executor is idle, by
applying `policy.decide`; requests whose client went away are dropped before dispatch.
batch_size counts items: a request may fill several (KServe v1 instances, tensor rows), one
with more than batch_size runs alone, and a batch holds requests of one protocol kind. One
exception keeps executors busy without changing any batch: a *full* batch (batch_size
requests, which waiting cannot grow) may wait in the inbox of an executor that is running
another, so the executor starts it the moment it finishes instead of waiting for the loop. One
full batch may wait per executor; more while batches are short (as many as fit in
`AHEAD_SECONDS` of the recent batch time, at most `MAX_AHEAD`): a fast model's executor then
goes from batch to batch without sleeping between them until the loop hands it the next.
The ledger of batches inside executors is serve.batching.flights.

The executor thread reports back with `complete` (through `call_soon_threadsafe`), which
answers every request of the batch and lets the executor take the next one. A watchdog checks
the running batches: one still running after the response timeout is answered with an error
(so is a batch queued behind it), and its executor is handed to `on_stuck`, which replaces it.

A request with a deadline gets a timer when it is queued. When the deadline passes the request
is answered 504 at once: a queued one is taken out of the queue, so no handler sees it; a
running one's batch goes on for the others and its late result is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from handlers.messages import BatchFailure, Output
from serve.batching import door
from serve.batching.flights import Batch, Flights, Runner
from serve.batching.policy import ArrivalRate, ConcurrencyWindow, Take, decide
from serve.errors import (
    InternalError,
    RequestTimeout,
    ServeError,
    ServiceUnavailable,
)
from serve.request import InferenceRequest

logger = logging.getLogger(__name__)

__all__ = ["Batch", "Batcher", "Runner"]


class Batcher:
    """Queue, policy and dispatch for one model version."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        batch_size: int,
        max_batch_delay_ms: int,
        queue_size: int,
        response_timeout: float,
        on_stuck: Callable[[Runner], None],
        on_batch: Callable[[Batch, float], None] | None = None,
        on_done: Callable[[float], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
        adaptive: bool = True,
    ) -> None:
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self.queue_size = queue_size
        self.response_timeout = response_timeout
        self.adaptive = adaptive  # False: wait up to max_batch_delay for a full batch, always
        self.capacity = 0  # executors loading or ready; set by the pool
        self._on_stuck = on_stuck
        self._on_batch = on_batch
        self._on_done = on_done
        self._on_deadline = on_deadline
        self._pending: deque[InferenceRequest] = deque()
        self._extra = 0  # items beyond one per pending request (0 unless multi-item requests)
        self._idle: deque[Runner] = deque()
        self._flights = Flights()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._window = ConcurrencyWindow()
        self._rate = ArrivalRate()
        self._closed = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop = asyncio.get_running_loop()

    # --- the request path: submit, idle, complete -------------------------------------------

    def submit(self, request: InferenceRequest) -> None:
        """Queue a request, or refuse it at the door (503) when there is no room."""
        door.check_open(self._closed, self.capacity, self.model, self.version)
        pending = self._pending
        if len(pending) >= self.queue_size:
            raise door.queue_full(self.model, self.version, self.queue_size)
        pending.append(request)
        door.arm_deadline(self._loop, request, self._deadline_passed)
        if request.items != 1:
            self._extra += request.items - 1
        self._drained.clear()
        now = request.arrival
        self._rate.observe(now)
        self._window.observe(len(pending) + self._flights.count, now)
        if self._idle or len(pending) + self._extra >= self.batch_size:
            self._dispatch()

    def idle(self, runner: Runner) -> None:
        """An executor is ready for a batch."""
        if runner.retiring or (self._closed and not self._pending):
            runner.stop()
            return
        self._idle.append(runner)
        self._dispatch()

    def complete(
        self,
        runner: Runner,
        batch: Batch,
        result: list[Output] | BatchFailure,
        run_seconds: float | None = None,
    ) -> None:
        """An executor finished `batch` (called on the loop from the executor thread).

        `run_seconds` is how long the executor ran it, as it measured (else the loop's time
        from handing it over to now, which adds the thread's wake-up and the loop's lag)."""
        flight = self._flights.finish(runner, batch)
        if flight is None:
            # the batch timed out and was already answered; the executor was replaced
            runner.stop()
            return
        run = run_seconds
        if flight.started is not None:
            seconds = time.monotonic() - flight.started
            if self._on_done is not None:
                self._on_done(seconds)
            run = seconds if run is None else run
        if run is not None:
            self._flights.observe_run(run)
        if isinstance(result, BatchFailure):
            error = InternalError(result.message, status=result.status)
            for request in batch:
                request.fail(error)
        else:
            for request, output in zip(batch, result, strict=True):
                request.deliver(output)
        if self._flights.start_next(runner, time.monotonic()):  # its inbox batch runs now
            self._dispatch()
        else:
            self._check_drained()
            self.idle(runner)

    def _deadline_passed(self, request: InferenceRequest) -> None:
        """Answer a request whose deadline passed: 504 now, out of the queue if still queued."""
        request.timer = None
        if request.future.done() and request.stream is None:
            return  # answered, failed or cancelled in the meantime
        stage = self._flights.stage_of(request)
        if not request.dispatched:
            with contextlib.suppress(ValueError):
                self._pending.remove(request)
            self._check_drained()
        door.deadline_exceeded(request, stage, self.model, self.version)
        deadline = request.deadline
        assert deadline is not None
        logger.info(
            "Request %s to model %s version %s: deadline of %s passed while %s; answered 504",
            request.request_id,
            self.model,
            self.version,
            deadline.describe(),
            stage,
        )
        if self._on_deadline is not None:
            self._on_deadline(stage)

    # --- removing executors ----------------------------------------------------------------

    def forget(self, runner: Runner) -> bool:
        """Drop an executor from the idle set (it is retiring); True if it was idle."""
        if runner in self._idle:
            self._idle.remove(runner)
            return True
        return False

    def _pop(self) -> InferenceRequest:
        request = self._pending.popleft()
        if request.items != 1:
            self._extra -= request.items - 1
        return request

    @property
    def pending(self) -> int:
        """Requests waiting in the queue."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests inside executors (running or queued in an inbox)."""
        return self._flights.count

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        pending = self._pending
        while pending:
            while pending and pending[0].done:
                self._pop()
            if not pending:
                break
            now = time.monotonic()
            items = len(pending) + self._extra
            if not self._idle:
                # no executor is free: only a full batch may queue behind a running one
                runner = self._flights.slot_for_full_batch() if items >= self.batch_size else None
                if runner is None:
                    break
                self._send(runner, self._take(self.batch_size, now), now, running=False)
                continue
            decision = decide(
                pending=items,
                oldest_age=now - pending[0].arrival,
                batch_size=self.batch_size,
                max_delay=self.max_batch_delay,
                gatherable=(
                    max(1, self._window.peak(now) - self._flights.count)
                    if self.adaptive
                    else self.batch_size
                ),
                arrival_rate=self._rate.rate(now) if self.adaptive else float("inf"),
            )
            if not isinstance(decision, Take):
                self._wake_after(decision.seconds)
                break
            batch = self._take(decision.count, now)
            if batch:
                self._send(self._idle.popleft(), batch, now, running=True)
        self._check_drained()

    def _take(self, count: int, now: float) -> Batch:
        """Up to `count` items of one kind; a request with more items than that goes alone."""
        pending = self._pending
        batch: Batch = []
        size = 0
        while pending and size < count:
            request = pending[0]
            if request.done:
                self._pop()
                continue
            if batch and (
                request.solo or request.kind != batch[0].kind or size + request.items > count
            ):
                break  # it goes in the next batch
            self._pop()
            request.dispatched = now
            batch.append(request)
            size += request.items
            if request.solo:
                break
        return batch

    def _send(self, runner: Runner, batch: Batch, now: float, *, running: bool) -> None:
        if not batch:
            return
        self._flights.send(runner, batch, now if running else None)
        if self._on_batch is not None:
            self._on_batch(batch, now)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )
        runner.run(batch)

    def _wake_after(self, seconds: float) -> None:
        due = time.monotonic() + seconds
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_later(seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    # --- the response-timeout watchdog -----------------------------------------------------

    def _watch(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        for runner in self._flights.expired(now, self.response_timeout):
            self._expire(runner)
        if self._flights:
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )

    def _expire(self, runner: Runner) -> None:
        flights = self._flights.drop(runner)
        logger.error(
            "Model %s version %s: %s did not finish a batch of %d within %gs; "
            "answering it with an error and replacing the executor",
            self.model,
            self.version,
            runner.name,
            len(flights[0].batch),
            self.response_timeout,
        )
        error = RequestTimeout(
            f'Model "{self.model}" version {self.version} did not answer within its '
            f"response_timeout of {self.response_timeout:g} s; the worker was replaced"
        )
        for flight in flights:  # a batch queued behind the stuck one cannot run either
            for request in flight.batch:
                request.fail(error)
        self._check_drained()
        self._on_stuck(runner)
        self._dispatch()

    # --- closing ---------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Refuse new requests, let queued and running ones finish (up to timeout), fail rest."""
        self._closed = True
        self._dispatch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        self.fail_all(
            ServiceUnavailable(f'Model "{self.model}" version {self.version} was unregistered')
        )
        for handle in (self._timer, self._watchdog):
            if handle is not None:
                handle.cancel()
        while self._idle:
            self._idle.popleft().stop()

    def fail_all(self, error: ServeError) -> None:
        """Answer everything queued or running with `error`."""
        while self._pending:
            self._pop().fail(error)
        for request in self._flights.requests():
            request.fail(error)
        self._flights.clear()
        self._drained.set()

    def _check_drained(self) -> None:
        if not self._flights.count and not self._pending:
            self._drained.set()
