"""The sequence batcher: TorchServe's stateful inference, behind the batcher's surface.

A request names its sequence (`sequence_id`, from the `ts_request_sequence_id` header or
gRPC's field); none opens a new sequence with a server-made id (`ts-seq-<uuid>`) and the
`ts_request_sequence_start` header. Every request of a sequence runs on the executor that ran
its first one, so handler state kept per executor (TorchServe's examples: an LRU keyed by the
id) is always there; at most one request per sequence is in a batch, and a sequence's
requests run in order. Decisions are serve.batching.sequence_policy's; this module waits.

The sequence table (serve.batching.sequence_table) holds the open sequences and ends them:
idle past sequenceMaxIdleMSec, sequenceTimeoutMSec after they opened, named by a handler in the
`ts_request_sequence_end` response header, after a request the client marked as its
sequence's last (gRPC's `ts_request_sequence_end` input), or when their executor retires or
fails. Every answer carries the sequence id header, streamed ones on their first chunk. An ended
id is remembered, and a request naming it is answered 503 saying why (TorchServe silently
opens a new sequence on another worker, whose handler then fails on the missing state).

Continuous variant: a request whose output is not final (the handler's `stopping_criteria`
said False) stays in its executor's batch and is sent again, with no inputs, until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable

from handlers.messages import BatchFailure, Output
from serve.batching import door
from serve.batching.flights import Batch, Flights, Runner
from serve.batching.policy import Take
from serve.batching.sequence_policy import SequenceSettings, admit_quota, decide_sequences
from serve.batching.sequence_table import Sequence, SequenceTable, cancel
from serve.errors import (
    InternalError,
    RequestTimeout,
    ServeError,
    ServiceUnavailable,
)
from serve.request import SEQUENCE_END_HEADER, InferenceRequest

logger = logging.getLogger(__name__)


class SequenceBatcher:
    """Sequences, their queues and their executors, for one model version."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        batch_size: int,
        max_batch_delay_ms: int,
        settings: SequenceSettings,
        response_timeout: float,
        on_stuck: Callable[[Runner], None],
        on_batch: Callable[[Batch, float], None] | None = None,
        on_done: Callable[[float], None] | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.batch_size = batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self.settings = settings
        self.response_timeout = response_timeout
        self.capacity = 0  # executors loading or ready; set by the pool
        self._on_stuck = on_stuck
        self._on_batch = on_batch
        self._on_done = on_done
        self._on_deadline = on_deadline
        self._continuing: dict[Runner, list[InferenceRequest]] = {}
        self._solo: deque[InferenceRequest] = deque()  # describe calls: any executor, alone
        self._idle: deque[Runner] = deque()
        self._flights = Flights()
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._loop = asyncio.get_running_loop()
        self._table = SequenceTable(
            label=self.label, settings=settings, loop=self._loop, on_end=self._check_drained
        )

    @property
    def label(self) -> str:
        return door.label(self.model, self.version)

    @property
    def live(self) -> int:
        """Sequences open now."""
        return len(self._table)

    @property
    def pending(self) -> int:
        """Requests waiting in the sequences' queues."""
        return len(self._solo) + sum(len(s.queue) for s in self._table)

    @property
    def in_flight(self) -> int:
        """Requests inside executors."""
        return self._flights.count

    # --- the request path ------------------------------------------------------------------

    def submit(self, request: InferenceRequest) -> None:
        """Queue a request in its sequence (opening one if needed), or refuse it (503)."""
        door.check_open(self._closed, self.capacity, self.model, self.version)
        if request.solo:
            self._solo.append(request)
            self._queued(request)
            return
        sequence = self._table.open_for(request)
        request.echo_sequence = True
        if len(sequence.queue) >= self.settings.queue_size:
            raise ServiceUnavailable(
                f'{self.label}: sequence "{sequence.id}" already has '
                f"{self.settings.queue_size} requests queued (maxSequenceJobQueueSize); "
                "send the next one after an answer",
                headers={"Retry-After": "1"},
            )
        sequence.queue.append(request)
        cancel(sequence.idle_timer)
        sequence.idle_timer = None
        self._queued(request)

    def _queued(self, request: InferenceRequest) -> None:
        door.arm_deadline(self._loop, request, self._deadline_passed)
        self._drained.clear()
        self._dispatch()

    def idle(self, runner: Runner) -> None:
        """An executor is ready for a batch."""
        if runner.retiring or (
            self._closed and not self.pending and runner not in self._continuing
        ):
            self._lose(runner, "ended: its worker was retired")
            runner.stop()
            return
        self._table.seen(runner)
        self._idle.append(runner)
        self._dispatch()

    def forget(self, runner: Runner) -> bool:
        """An executor retires: its sequences end; True if it was idle (stop it now)."""
        if runner in self._idle:
            self._idle.remove(runner)
            self._lose(runner, "ended: its worker was retired")
            return True
        return False

    def complete(
        self,
        runner: Runner,
        batch: Batch,
        result: list[Output] | BatchFailure,
        run_seconds: float | None = None,
    ) -> None:
        """An executor answered one batch (one iteration, in the continuous variant)."""
        flight = self._flights.finish(runner, batch)
        if flight is None:  # timed out and answered already; the executor was replaced
            runner.stop()
            return
        if flight.started is not None and self._on_done is not None:
            self._on_done(time.monotonic() - flight.started)
        self._flights.start_next(runner, time.monotonic())  # no inbox here: forgets it
        continuing: list[InferenceRequest] = []
        ended: list[str] = []
        client_ended: list[Sequence] = []
        for idx, request in enumerate(batch):
            sequence = self._table.get(request.sequence_id)
            if isinstance(result, BatchFailure):
                request.fail(InternalError(result.message, status=result.status))
                final = True
            else:
                output = result[idx]
                final = output.final
                if final or self.settings.continuous:
                    ended.extend(_ended_ids(output))
                    request.deliver(output)
                    if not final and not request.future.cancelled():
                        continuing.append(request)
                else:  # a plain batcher has no second iteration: the stream ends here
                    request.deliver(dataclasses.replace(output, final=True))
                    final = True
            if sequence is not None and final:
                sequence.running -= 1
                if request.sequence_end:
                    client_ended.append(sequence)
                self._table.maybe_idle(sequence)
        for sid in ended:
            sequence = self._table.get(sid)
            if sequence is not None:
                self._table.end(sequence, "was ended by the handler")
        for sequence in client_ended:
            self._table.end(sequence, "was ended by its client (ts_request_sequence_end)")
        if continuing:
            self._continuing[runner] = continuing
        self._check_drained()
        self.idle(runner)

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> None:
        cancel(self._timer)
        self._timer = None
        now = time.monotonic()
        wake: float | None = None
        for runner in list(self._idle):
            batch, wait = self._batch_for(runner, now)
            if batch:
                self._idle.remove(runner)
                self._send(runner, batch, now)
            elif wait is not None:
                wake = wait if wake is None else min(wake, wait)
        if wake is not None:
            self._timer = self._loop.call_later(wake, self._dispatch)
        self._check_drained()

    def _batch_for(self, runner: Runner, now: float) -> tuple[Batch, float | None]:
        """The next batch for an idle executor, or how long to wait for a fuller one."""
        while self._solo:
            request = self._solo.popleft()
            if not request.done:
                request.dispatched = now
                return [request], None
        continuing = []
        for request in self._continuing.pop(runner, []):
            if _wanted(request):
                continuing.append(request)
                continue
            logger.info("%s: request %s left its stream; dropped", self.label, request.request_id)
            sequence = self._table.get(request.sequence_id)
            if sequence is not None:
                sequence.running -= 1
                self._table.maybe_idle(sequence)
        for request in continuing:
            request.params = ()  # TorchServe sends a continuing request without its inputs
        ready: list[Sequence] = []
        could_join = 0
        for sequence in self._table:
            if sequence.runner is not None and sequence.runner is not runner:
                continue
            while sequence.queue and sequence.queue[0].done:
                sequence.queue.popleft()  # its client went away or its deadline passed
            if sequence.queue and (self.settings.continuous or not sequence.running):
                ready.append(sequence)
            elif not sequence.running:
                could_join += 1
        ready.sort(key=lambda s: s.queue[0].arrival)
        decision = decide_sequences(
            ready=len(ready),
            could_join=could_join,
            continuing=len(continuing),
            oldest_age=now - ready[0].queue[0].arrival if ready else 0.0,
            quota=admit_quota(
                self.batch_size, len(continuing), continuous=self.settings.continuous
            ),
            max_delay=self.max_batch_delay,
        )
        if not isinstance(decision, Take):
            return continuing, decision.seconds
        batch = continuing
        for sequence in ready[: decision.count]:
            request = sequence.queue.popleft()
            if sequence.runner is None:  # a new sequence stays where it first ran
                self._table.claim(sequence, runner)
            sequence.running += 1
            request.dispatched = now
            batch.append(request)
        return batch, None

    def _send(self, runner: Runner, batch: Batch, now: float) -> None:
        self._flights.send(runner, batch, now)
        if self._on_batch is not None:
            self._on_batch(batch, now)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )
        runner.run(batch)

    # --- ending sequences ------------------------------------------------------------------

    def _lose(self, runner: Runner, why: str) -> None:
        """An executor is gone: end its sequences (their state went with it)."""
        error = ServiceUnavailable(f"{self.label}: the worker running this stream was retired")
        for request in self._continuing.pop(runner, []):
            request.fail(error)
        self._table.lose(runner, why)

    def _deadline_passed(self, request: InferenceRequest) -> None:
        request.timer = None
        if request.future.done() and request.stream is None:
            return
        stage = self._flights.stage_of(request)
        if not request.dispatched:
            sequence = self._table.get(request.sequence_id)
            with contextlib.suppress(ValueError, AttributeError):
                (sequence.queue if sequence else self._solo).remove(request)
            if sequence is not None:
                self._table.maybe_idle(sequence)
        door.deadline_exceeded(request, stage, self.model, self.version)
        if self._on_deadline is not None:
            self._on_deadline(stage)
        self._check_drained()

    # --- the response-timeout watchdog -----------------------------------------------------

    def _watch(self) -> None:
        self._watchdog = None
        for runner in self._flights.expired(time.monotonic(), self.response_timeout):
            error = RequestTimeout(
                f"{self.label} did not answer within its response_timeout of "
                f"{self.response_timeout:g} s; the worker was replaced"
            )
            for flight in self._flights.drop(runner):
                for request in flight.batch:
                    request.fail(error)
            self._lose(runner, "ended: its worker was replaced (response_timeout)")
            self._on_stuck(runner)
        if self._flights:
            self._watchdog = self._loop.call_later(
                door.watch_period(self.response_timeout), self._watch
            )
        self._check_drained()

    # --- closing ---------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Refuse new requests, let queued and running ones finish (up to timeout), fail rest."""
        self._closed = True
        self._dispatch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        self.fail_all(ServiceUnavailable(f"{self.label} was unregistered"))
        for handle in (self._timer, self._watchdog):
            cancel(handle)
        for sequence in list(self._table):
            self._table.end(sequence, "ended: the model was unregistered")
        while self._idle:
            self._idle.popleft().stop()

    def fail_all(self, error: ServeError) -> None:
        """Answer everything queued or running with `error`."""
        for sequence in self._table:
            while sequence.queue:
                sequence.queue.popleft().fail(error)
            sequence.running = 0
        while self._solo:
            self._solo.popleft().fail(error)
        for request in self._flights.requests():
            request.fail(error)
        for requests in self._continuing.values():
            for request in requests:
                request.fail(error)
        self._continuing.clear()
        self._flights.clear()
        self._drained.set()

    def _check_drained(self) -> None:
        if not self._flights.count and not self.pending and not self._continuing:
            self._drained.set()


def _wanted(request: InferenceRequest) -> bool:
    """A continuing request still has a client: not failed, cancelled or timed out."""
    future = request.future
    if request.abandoned or future.cancelled():
        return False
    return not future.done() or future.exception() is None


def _ended_ids(output: Output) -> list[str]:
    value = output.headers.get(SEQUENCE_END_HEADER)
    return [part for part in str(value).split(";") if part] if value else []
