"""The executors of one model version: started on devices round-robin, retired after their batch.

Scaling up starts threads on the least-used configured device (round-robin from the first);
scaling down retires the newest executors, each after its current batch, never mid-batch.
A load failure is logged with its traceback and retried with backoff while the pool still
wants the worker; so is a load that outlives the startup timeout (TorchServe's
`startupTimeout`): its thread cannot be killed, so it is abandoned and exits without serving
once `initialize` returns. A stuck executor (past the response timeout) is replaced on its
device.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from handlers.loader import ServiceSpec
from serve.errors import ServeError, ServiceUnavailable
from serve.workers.devices import pick_device
from serve.workers.executor import Batch, Executor, Result
from serve.workers.intraop import ThreadBudget

logger = logging.getLogger(__name__)

_worker_ids = itertools.count(9000)
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
# TorchServe's two log lines for a load past startupTimeout (WorkerThread: the message, then
# the exception's first line), which its own tests read from the server's output
STARTUP_TIMEOUT_ERROR = (
    "org.pytorch.serve.wlm.WorkerInitializationException: "
    "Backend worker did not respond in given time"
)


class Scheduler(Protocol):
    """What a pool needs of its version's scheduler (the batcher).

    Declared here, not imported from batching/: workers sit below the scheduler, which hands
    them batches, so the arrow points down only.
    """

    capacity: int  # executors loading or ready; the pool keeps it

    def idle(self, runner: Executor) -> None: ...

    def forget(self, runner: Executor) -> bool: ...

    def complete(
        self, runner: Executor, batch: Batch, result: Result, run_seconds: float | None = None
    ) -> None: ...

    def fail_all(self, error: ServeError) -> None: ...


class Pool:
    """Executors of one model version and the count the operator asked for."""

    def __init__(
        self,
        *,
        spec_for: Callable[[int | None], ServiceSpec],
        devices: Sequence[int | None],
        batcher: Scheduler,
        budget: ThreadBudget,
        label: str,
        startup_timeout: float,
    ) -> None:
        self._spec_for = spec_for
        self._startup_timeout = startup_timeout
        self._devices = list(devices)
        self._batcher = batcher
        self._budget = budget
        self._label = label
        self._loop = asyncio.get_running_loop()
        self.executors: list[Executor] = []
        self.target = 0
        self.last_error: str | None = None
        self._failures = 0
        self._retry: asyncio.TimerHandle | None = None
        self._load_timers: dict[Executor, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._closing = False

    @property
    def live(self) -> list[Executor]:
        """Executors loading or ready, not retiring (a failed one waits for its retry)."""
        return [e for e in self.executors if not e.retiring and e.state != "FAILED"]

    @property
    def ready_count(self) -> int:
        """Executors ready for batches."""
        return sum(1 for e in self.executors if e.state == "READY" and not e.retiring)

    def scale(self, target: int) -> list[Executor]:
        """Start or retire executors until `target` are live; returns the ones started."""
        self.target = target
        self._failures = 0
        self.last_error = None
        return self._reconcile()

    def _reconcile(self) -> list[Executor]:
        live = self.live
        started = [self._start() for _ in range(self.target - len(live))]
        for executor in reversed(live[self.target :] if len(live) > self.target else []):
            self._retire(executor)
        return started

    def _start(self) -> Executor:
        device = pick_device(self._devices, [e.device for e in self.live])
        executor = Executor(
            worker_id=str(next(_worker_ids)),
            spec=self._spec_for(device),
            budget=self._budget,
            loop=self._loop,
            on_loaded=self._loaded,
            on_complete=self._complete,
            on_exit=self._exited,
        )
        self.executors.append(executor)
        self._batcher.capacity += 1
        self._budget.add()
        self._load_timers[executor] = self._loop.call_later(
            self._startup_timeout, self._load_timed_out, executor
        )
        executor.start()
        return executor

    def _load_timed_out(self, executor: Executor) -> None:
        """Past the startup timeout and still loading: abandon it, count a failed load."""
        self._load_timers.pop(executor, None)
        if executor.state != "LOADING" or executor not in self.executors:
            return
        logger.error(
            "%s: executor %s: Backend worker error (startupTimeout %gs)\n%s",
            self._label,
            executor.id,
            self._startup_timeout,
            STARTUP_TIMEOUT_ERROR,
        )
        executor.state = "FAILED"
        self.executors.remove(executor)
        self._budget.remove()
        if not executor.retiring:
            self._batcher.capacity -= 1
        executor.retiring = True
        executor.stop()  # queued first: once initialize returns, the thread exits unserved
        self._failures += 1
        self.last_error = (
            "WorkerInitializationException: Backend worker did not respond in given time"
        )
        self._schedule_retry()
        if self._batcher.capacity <= 0:
            self._batcher.fail_all(
                ServiceUnavailable(
                    f"{self._label} has no worker: loading failed: {self.last_error}"
                )
            )
        self._changed.set()

    def _retire(self, executor: Executor) -> None:
        executor.retiring = True
        if executor.state == "READY":
            executor.state = "UNLOADING"
        self._batcher.capacity -= 1
        # an idle one stops now; a busy or loading one stops when it reports back (batcher.idle)
        if self._batcher.forget(executor):
            executor.stop()
        self._changed.set()

    # --- callbacks from executor threads (on the loop) ---------------------------------------

    def _loaded(self, executor: Executor, error: BaseException | None) -> None:
        timer = self._load_timers.pop(executor, None)
        if timer is not None:
            timer.cancel()
        if executor not in self.executors:  # abandoned past the startup timeout
            logger.warning(
                "%s: executor %s finished loading after its startup timeout; it exits unused",
                self._label,
                executor.id,
            )
            return
        if error is not None:
            executor.state = "FAILED"
            self._failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            # the error's text comes once, as the traceback's last line: TorchServe's readers
            # take the first line naming the exception type as the end of its traceback
            logger.error(
                "%s: executor %s failed to load on %s; traceback:",
                self._label,
                executor.id,
                _device_name(executor.device),
                exc_info=error,
            )
            if not executor.retiring:
                self._batcher.capacity -= 1
                self._schedule_retry()
            if self._batcher.capacity <= 0:
                self._batcher.fail_all(
                    ServiceUnavailable(
                        f"{self._label} has no worker: loading failed: {self.last_error}"
                    )
                )
        else:
            executor.state = "UNLOADING" if executor.retiring else "READY"
            self._failures = 0
            logger.info(
                "%s: executor %s %s on %s (load %.2fs, %d intra-op threads)",
                self._label,
                executor.id,
                "loaded after it was retired, stopping" if executor.retiring else "ready",
                _device_name(executor.device),
                executor.load_seconds or 0.0,
                self._budget.per_executor,
            )
            self._batcher.idle(executor)  # a retired one is stopped here
        self._changed.set()

    def _complete(
        self, executor: Executor, batch: Batch, result: Result, seconds: float | None
    ) -> None:
        self._batcher.complete(executor, batch, result, seconds)

    def _exited(self, executor: Executor) -> None:
        if executor in self.executors:
            self.executors.remove(executor)
            self._budget.remove()
        self._changed.set()

    def replace_stuck(self, runner: object) -> None:
        """An executor ran past the response timeout: forget it and start another in its place."""
        executor = next((e for e in self.executors if e is runner), None)
        if executor is None:
            return
        self.executors.remove(executor)
        self._budget.remove()
        if not executor.retiring:
            self._batcher.capacity -= 1
        executor.retiring = True
        executor.stop()  # it exits whenever its handler call returns
        if not self._closing and len(self.live) < self.target:
            self._start()
        self._changed.set()

    def _schedule_retry(self) -> None:
        if self._closing or self._retry is not None or len(self.live) >= self.target:
            return
        if self._failures > len(RETRY_DELAYS):
            logger.error("%s: giving up on loading after %d failures", self._label, self._failures)
            return
        delay = RETRY_DELAYS[self._failures - 1]
        logger.info("%s: retrying the load in %gs", self._label, delay)
        self._retry = self._loop.call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if not self._closing:
            self._reconcile()

    # --- waiting and closing ---------------------------------------------------------------

    async def wait_loaded(self, executors: Sequence[Executor], timeout: float) -> bool:
        """Wait until each executor is ready or has failed; True if all are ready."""
        settled = await self._wait_until(
            lambda: all(e.state != "LOADING" for e in executors), timeout
        )
        return settled and all(e.state == "READY" for e in executors)

    async def wait_gone(self, timeout: float) -> bool:
        """Wait until every retiring executor's thread has exited."""
        return await self._wait_until(lambda: not any(e.retiring for e in self.executors), timeout)

    async def _wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Re-check `condition` whenever an executor changes state; False on timeout."""

        async def settle() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(settle(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float) -> None:
        """Retire every executor and wait for the threads (a stuck one is left behind)."""
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        for timer in self._load_timers.values():
            timer.cancel()
        self._load_timers.clear()
        self.target = 0
        for executor in self.live:
            self._retire(executor)
        for executor in list(self.executors):
            executor.stop()
        threads = list(self.executors)
        done = await asyncio.to_thread(_join_all, threads, timeout)
        if not done:
            logger.warning(
                "%s: some executor threads did not exit within %gs", self._label, timeout
            )


def _join_all(executors: Sequence[Executor], timeout: float) -> bool:
    return all(executor.join(timeout) for executor in executors)


def _device_name(device: int | None) -> str:
    return "cpu" if device is None else f"gpu {device}"
