"""The step scheduler of a generative model version: sequences join and leave between steps.

Everything here runs on the event loop, behind the surface the pool drives (serve.workers.pool
`Scheduler`: add, forget, complete, fail_all, plus submit and close). Each ready executor
runs one step at a time over its live set; when a step completes, its outputs go to their
clients (a non-final output is one more chunk of the request's stream), finished requests
leave, and the next step starts at once with the rest plus queued requests admitted up to
`batch_size` live sequences, oldest first. A step never waits for a sequence to finish, and
an executor with nothing live runs nothing.

A request whose client went away or whose deadline passed (`request.done`) leaves at the next
step: a queued one never reaches a handler; a running one rides along in the next step's
batch already done, so the executor skips it and tells the handler to free its sequence
(`release_sequences`), and a TorchServe handler sees its id missing, as in TorchServe.

Admission is first come, first served, so no queued request is passed over; the prompt
tokens a step may prefill and the KV cache a sequence reserves are bounded on the executor
side (handlers.generation.stepper), where the prompt is tokenized, so the loop never
tokenizes. The executor reports its KV cache after each step (`Executor.kv`); while it holds
sequences for want of KV budget, this admits no more into it, and those held count as
waiting. `response_timeout` applies per step, as TorchServe applies it per iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from handlers.messages import BatchFailure, KVUsage, Output
from serve.batching import door
from serve.batching.batcher import Runner
from serve.errors import (
    InternalError,
    RequestTimeout,
    ServeError,
    ServiceUnavailable,
)
from serve.request import InferenceRequest

logger = logging.getLogger(__name__)

Batch = list[InferenceRequest]


@dataclass(slots=True)
class Lane:
    """One executor's live sequences and the step it runs now (None: between steps)."""

    live: Batch = field(default_factory=list)
    step: Batch | None = None
    started: float = 0.0
    dropped: Batch = field(default_factory=list)  # left mid-sequence; the handler is told


class StepScheduler:
    """Queue, admission and step dispatch for one generative model version."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        batch_size: int,
        queue_size: int,
        response_timeout: float,
        on_stuck: Callable[[Runner], None],
        on_step: Callable[[Batch, float], None] | None = None,
        on_done: Callable[[float], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.response_timeout = response_timeout
        self.capacity = 0  # executors loading or ready; set by the pool
        self.steps = 0
        self._on_stuck = on_stuck
        self._on_step = on_step
        self._on_done = on_done
        self._on_deadline = on_deadline
        self._pending: deque[InferenceRequest] = deque()
        self._lanes: dict[Runner, Lane] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop = asyncio.get_running_loop()

    # --- figures ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests waiting for a slot, or in one but held for want of KV budget."""
        return len(self._pending) + sum(self._held_in(runner) for runner in self._lanes)

    @property
    def running(self) -> int:
        """Sequences live in executors (less those held for KV budget)."""
        live = sum(len(lane.live) for lane in self._lanes.values())
        return live - sum(self._held_in(runner) for runner in self._lanes)

    def _held_in(self, runner: Runner) -> int:
        # the executor's count is from its last step: never more than the lane holds now
        return min(_held(runner), len(self._lanes[runner].live))

    @property
    def in_flight(self) -> int:
        """Sequences inside executors, held or not."""
        return sum(len(lane.live) for lane in self._lanes.values())

    def kv_usage(self) -> KVUsage | None:
        """The executors' KV caches summed (None: no executor reports one)."""
        usages = [u for u in (_kv(runner) for runner in self._lanes) if u is not None]
        if not usages:
            return None
        budgets = [u.budget for u in usages]
        return KVUsage(
            sum(u.in_use for u in usages),
            sum(u.reserved for u in usages),
            None if None in budgets else sum(b for b in budgets if b is not None),
            sum(u.held for u in usages),
        )

    # --- the surface -----------------------------------------------------------------------

    def submit(self, request: InferenceRequest) -> None:
        """Queue a request, or refuse it at the door (503) when there is no room."""
        door.check_open(self._closed, self.capacity, self.model, self.version)
        if len(self._pending) >= self.queue_size:
            raise door.queue_full(self.model, self.version, self.queue_size)
        self._pending.append(request)
        self._drained.clear()
        door.arm_deadline(self._loop, request, self._deadline_passed)
        for runner, lane in self._lanes.items():
            if lane.step is None and not runner.retiring:
                self._next_step(runner, lane)
                break

    def idle(self, runner: Runner) -> None:
        """An executor is ready for steps."""
        if runner.retiring or (self._closed and not self._pending):
            runner.stop()
            return
        lane = self._lanes.setdefault(runner, Lane())
        if lane.step is None:
            self._next_step(runner, lane)

    def forget(self, runner: Runner) -> bool:
        """An executor retires: True if it is between steps with nothing live (stop it now);
        otherwise it stops after its live sequences finish."""
        lane = self._lanes.get(runner)
        if lane is None or (lane.step is None and not lane.live):
            self._lanes.pop(runner, None)
            return True
        return False

    def complete(
        self,
        runner: Runner,
        batch: Batch,
        result: list[Output] | BatchFailure,
        run_seconds: float | None = None,
    ) -> None:
        """An executor finished a step (called on the loop from its thread)."""
        lane = self._lanes.get(runner)
        if lane is None or lane.step is not batch:
            runner.stop()  # the step timed out and was answered; the executor was replaced
            return
        lane.step = None
        self.steps += 1
        if self._on_done is not None:
            self._on_done(
                run_seconds if run_seconds is not None else time.monotonic() - lane.started
            )
        if isinstance(result, BatchFailure):
            # TorchServe: a failed iteration fails every request in it
            error = InternalError(result.message, status=result.status)
            for request in lane.live:
                request.fail(error)
            lane.dropped.extend(lane.live)
            lane.live = []
        else:
            keep: Batch = []
            for request, output in zip(batch, result, strict=True):
                if request.done:
                    if not output.final and request in lane.live:
                        lane.dropped.append(request)  # cancelled during the step
                    continue
                request.steps += 1
                request.deliver(output)
                if not output.final:
                    keep.append(request)
            lane.live = keep
        if runner.retiring and not lane.live:
            del self._lanes[runner]
            runner.stop()
            self._check_drained()
            return
        self._next_step(runner, lane)

    def _next_step(self, runner: Runner, lane: Lane) -> None:
        """Drop what left, admit what fits, and send the step (nothing to run: stay idle)."""
        live = lane.live
        if any(r.done for r in live):
            lane.dropped.extend(r for r in live if r.done)
            live = lane.live = [r for r in live if not r.done]
        now = time.monotonic()
        admitted = 0
        if not runner.retiring and not _held(runner):  # held: its KV budget is spent
            pending = self._pending
            while pending and len(live) < self.batch_size:
                request = pending.popleft()
                if request.done:
                    continue  # cancelled or expired while queued: no handler sees it
                request.dispatched = now
                live.append(request)
                admitted += 1
        dropped, lane.dropped = lane.dropped, []
        if not live and not dropped:
            self._check_drained()
            if runner.retiring:
                self._lanes.pop(runner, None)
                runner.stop()
            return
        step = [*dropped, *live]  # the dropped ones are done: the executor releases them
        lane.step = step
        lane.started = now
        if self._on_step is not None and admitted:
            self._on_step(live[len(live) - admitted :], now)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )
        runner.run(step)

    def _deadline_passed(self, request: InferenceRequest) -> None:
        request.timer = None
        if request.done:
            return
        stage = "queued" if not request.dispatched else "running"
        if stage == "queued":
            with contextlib.suppress(ValueError):
                self._pending.remove(request)
        door.deadline_exceeded(request, stage, self.model, self.version)
        if self._on_deadline is not None:
            self._on_deadline(stage)
        self._check_drained()

    # --- the response-timeout watchdog (per step) ------------------------------------------

    def _watch(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        for runner, lane in list(self._lanes.items()):
            if lane.step is not None and now - lane.started > self.response_timeout:
                self._expire(runner, lane)
        if any(lane.step is not None for lane in self._lanes.values()):
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )

    def _expire(self, runner: Runner, lane: Lane) -> None:
        del self._lanes[runner]
        logger.error(
            "Model %s version %s: %s did not finish a step of %d sequences within %gs; "
            "answering them with an error and replacing the executor",
            self.model,
            self.version,
            runner.name,
            len(lane.live),
            self.response_timeout,
        )
        error = RequestTimeout(
            f'Model "{self.model}" version {self.version} did not finish a step within its '
            f"response_timeout of {self.response_timeout:g} s; the worker was replaced"
        )
        for request in lane.live:
            request.fail(error)
        self._check_drained()
        self._on_stuck(runner)

    # --- closing ---------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Refuse new requests, let queued and live ones finish (up to timeout), fail the rest."""
        self._closed = True
        self._check_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        self.fail_all(
            ServiceUnavailable(f'Model "{self.model}" version {self.version} was unregistered')
        )
        if self._watchdog is not None:
            self._watchdog.cancel()
        for runner, lane in list(self._lanes.items()):
            if lane.step is None:
                del self._lanes[runner]
                runner.stop()

    def fail_all(self, error: ServeError) -> None:
        """Answer everything queued or live with `error`."""
        while self._pending:
            self._pending.popleft().fail(error)
        for lane in self._lanes.values():
            for request in lane.live:
                request.fail(error)
        self._drained.set()

    def _check_drained(self) -> None:
        if not self._pending and not any(lane.live for lane in self._lanes.values()):
            self._drained.set()


def _kv(runner: Runner) -> KVUsage | None:
    usage = getattr(runner, "kv", None)  # an Executor's report after its last step
    return usage if isinstance(usage, KVUsage) else None


def _held(runner: Runner) -> int:
    usage = _kv(runner)
    return 0 if usage is None else usage.held
