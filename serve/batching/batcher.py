"""The per-model-version dynamic batcher: a bounded queue, idle executors, and dispatch.

Everything here runs on the event loop. A batch is formed only when an executor is idle, by
applying `policy.decide`; requests whose client went away are dropped before dispatch. The
executor thread reports back with `complete` (through `call_soon_threadsafe`), which answers
every request of the batch and makes the executor idle again. A batch still running after the
response timeout is answered with an error and its executor is handed to `on_stuck`, which
replaces it; the model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from handlers.messages import BatchFailure, Output
from serve.batching.policy import ArrivalRate, ConcurrencyWindow, Take, decide
from serve.batching.request import InferenceRequest
from serve.errors import InternalError, RequestTimeout, ServeError, ServiceUnavailable, no_worker

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """What the batcher needs of an executor."""

    name: str
    retiring: bool

    def run(self, batch: list[InferenceRequest]) -> None: ...

    def stop(self) -> None: ...


Batch = list[InferenceRequest]


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
    ) -> None:
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self.queue_size = queue_size
        self.response_timeout = response_timeout
        self.capacity = 0  # executors loading or ready; set by the pool
        self._on_stuck = on_stuck
        self._on_batch = on_batch
        self._pending: deque[InferenceRequest] = deque()
        self._idle: deque[Runner] = deque()
        self._running: dict[Runner, tuple[Batch, asyncio.TimerHandle]] = {}
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._window = ConcurrencyWindow()
        self._rate = ArrivalRate()
        self._closed = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop = asyncio.get_running_loop()
        self.executions = 0
        self.inferences = 0

    # --- the three calls of the surface: submit, add (idle), complete -----------------------

    def submit(self, request: InferenceRequest) -> None:
        """Queue a request, or refuse it at the door (503) when there is no room."""
        if self._closed:
            raise ServiceUnavailable(
                f'Model "{self.model}" version {self.version} is being unregistered'
            )
        if self.capacity <= 0:
            raise no_worker(self.model)
        if len(self._pending) >= self.queue_size:
            raise ServiceUnavailable(
                f'Model "{self.model}" version {self.version} has {self.queue_size} requests '
                "queued (job_queue_size); retry later or scale workers up",
                headers={"Retry-After": "1"},
            )
        self._pending.append(request)
        self._drained.clear()
        now = request.arrival
        self._rate.observe(now)
        self._window.observe(len(self._pending) + self._in_flight, now)
        if self._idle:
            self._dispatch()

    def add(self, runner: Runner) -> None:
        """An executor is ready for a batch."""
        if runner.retiring or (self._closed and not self._pending):
            runner.stop()
            return
        self._idle.append(runner)
        self._dispatch()

    def complete(self, runner: Runner, batch: Batch, result: list[Output] | BatchFailure) -> None:
        """An executor finished `batch` (called on the loop from the executor thread)."""
        entry = self._running.pop(runner, None)
        if entry is None or entry[0] is not batch:
            # the batch timed out and was already answered; the executor was replaced
            runner.stop()
            return
        entry[1].cancel()
        self._in_flight -= len(batch)
        if isinstance(result, BatchFailure):
            error = InternalError(result.message, status=result.status)
            for request in batch:
                request.fail(error)
        else:
            for request, output in zip(batch, result, strict=True):
                request.deliver(output)
        self._check_drained()
        self.add(runner)

    # --- removing executors ----------------------------------------------------------------

    def forget(self, runner: Runner) -> bool:
        """Drop an executor from the idle set (it is retiring); True if it was idle."""
        if runner in self._idle:
            self._idle.remove(runner)
            return True
        return False

    @property
    def pending(self) -> int:
        """Requests waiting in the queue."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Requests inside executors."""
        return self._in_flight

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        pending = self._pending
        while self._idle and pending:
            while pending and pending[0].done:
                pending.popleft()
            if not pending:
                break
            now = time.monotonic()
            decision = decide(
                pending=len(pending),
                oldest_age=now - pending[0].arrival,
                batch_size=self.batch_size,
                max_delay=self.max_batch_delay,
                gatherable=max(1, self._window.peak(now) - self._in_flight),
                arrival_rate=self._rate.rate(now),
            )
            if not isinstance(decision, Take):
                self._wake_after(decision.seconds)
                return
            batch: Batch = []
            while pending and len(batch) < decision.count:
                request = pending.popleft()
                if not request.done:
                    request.dispatched = now
                    batch.append(request)
            if batch:
                self._start(self._idle.popleft(), batch, now)
        self._check_drained()

    def _start(self, runner: Runner, batch: Batch, now: float) -> None:
        timer = self._loop.call_later(self.response_timeout, self._expire, runner, batch)
        self._running[runner] = (batch, timer)
        self._in_flight += len(batch)
        self.executions += 1
        self.inferences += len(batch)
        if self._on_batch is not None:
            self._on_batch(batch, now)
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

    def _expire(self, runner: Runner, batch: Batch) -> None:
        entry = self._running.get(runner)
        if entry is None or entry[0] is not batch:
            return
        del self._running[runner]
        self._in_flight -= len(batch)
        logger.error(
            "Model %s version %s: %s did not finish a batch of %d within %gs; "
            "answering it with an error and replacing the executor",
            self.model,
            self.version,
            runner.name,
            len(batch),
            self.response_timeout,
        )
        error = RequestTimeout(
            f'Model "{self.model}" version {self.version} did not answer within its '
            f"response_timeout of {self.response_timeout:g} s; the worker was replaced"
        )
        for request in batch:
            request.fail(error)
        self._check_drained()
        self._on_stuck(runner)

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
        if self._timer is not None:
            self._timer.cancel()
        while self._idle:
            self._idle.popleft().stop()

    def fail_all(self, error: ServeError) -> None:
        """Answer everything queued or running with `error`."""
        while self._pending:
            self._pending.popleft().fail(error)
        for batch, timer in self._running.values():
            timer.cancel()
            for request in batch:
                request.fail(error)
        self._running.clear()
        self._in_flight = 0
        self._drained.set()

    def _check_drained(self) -> None:
        if not self._in_flight and not self._pending:
            self._drained.set()
