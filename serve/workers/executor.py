"""One executor thread: owns one handler instance on one device and runs batches in order.

The handler is created and initialized in this thread. The thread never touches aiohttp or
grpclib objects: results go back to the event loop with `call_soon_threadsafe`, one call per
batch (plus one per streamed chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from handlers.batch import run_batch
from handlers.loader import ServiceSpec, load_service
from handlers.messages import BatchFailure, KVUsage, Output
from handlers.service import Service
from handlers.util import forget_private_modules
from handlers.wire import Signature
from serve.request import InferenceRequest
from serve.workers.intraop import ExecutorThreads, ThreadBudget

logger = logging.getLogger(__name__)
# TorchServe's worker line per batch, which its log readers wait for (model_log.log); quiet
# unless the log files are written (serve.telemetry.log_files)
backend_log = logging.getLogger("serve.backend")

Batch = list[InferenceRequest]
Result = list[Output] | BatchFailure


class Executor:
    """A thread running one handler instance; states LOADING → READY → (UNLOADING) → gone."""

    def __init__(
        self,
        *,
        worker_id: str,
        spec: ServiceSpec,
        budget: ThreadBudget,
        loop: asyncio.AbstractEventLoop,
        on_loaded: Callable[[Executor, BaseException | None], None],
        on_complete: Callable[[Executor, Batch, Result, float | None], None],
        on_exit: Callable[[Executor], None],
    ) -> None:
        self.id = worker_id
        self.device = spec.gpu_id
        self.name = f"W-{worker_id}-{spec.model_name}"
        self.state = "LOADING"
        self.retiring = False
        self.started_at = datetime.now(UTC)
        self.load_seconds: float | None = None
        self.thread_seconds: float | None = None  # the last batch's time outside the handler
        self.thread_at = 0.0  # when it was measured (the newest executor's is exported)
        self.signature: Signature | None = None  # what a tensor handler declares, once loaded
        self.kv: KVUsage | None = None  # a generative handler's KV cache after its last step
        self._spec = spec
        self._budget = budget
        self._loop = loop
        self._on_loaded = on_loaded
        self._on_complete = on_complete
        self._on_exit = on_exit
        self._inbox: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._threads = 0
        self._policy = ExecutorThreads(budget, steps=spec.continuous)

    def start(self) -> None:
        """Start the thread; it loads the handler, then reports through `on_loaded`."""
        self._thread.start()

    def run(self, batch: Batch) -> None:
        """Queue a batch (called on the loop; the batcher only sends one when idle)."""
        self._inbox.put(batch)

    def stop(self) -> None:
        """Exit after the current batch."""
        self._inbox.put(None)

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the thread ------------------------------------------------------------------------

    def _main(self) -> None:
        started = time.monotonic()
        try:
            service, stream = self._load()
        except BaseException as exc:
            forget_private_modules()
            self._post(self._on_loaded, self, exc)
            self._post(self._on_exit, self)
            return
        self.load_seconds = time.monotonic() - started
        self.signature = service.signature  # published to the loop by the on_loaded call
        self._post(self._on_loaded, self, None)
        try:
            self._serve(service, stream)
        finally:
            del service
            forget_private_modules()  # else every executor's handler module stays loaded
            self._post(self._on_exit, self)

    def _load(self) -> tuple[Service, Any]:
        import torch

        self._threads = self._policy.current()
        torch.set_num_threads(self._threads)
        stream = None
        if self.device is not None and torch.cuda.is_available():
            if self.device >= torch.cuda.device_count():
                raise RuntimeError(
                    f"device {self.device} does not exist: {torch.cuda.device_count()} GPUs visible"
                )
            torch.cuda.set_device(self.device)
            stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        with _on_stream(stream):
            service = load_service(self._spec)
        return service, stream

    def _serve(self, service: Service, stream: Any) -> None:
        import torch

        inbox = self._inbox
        policy = self._policy
        while True:
            batch = inbox.get()
            if batch is None:
                return
            threads = policy.current()
            if threads != self._threads:
                self._threads = threads
                torch.set_num_threads(threads)
            live = _unanswered(batch)
            if live is not batch and service.continuous:
                # a step scheduler's sequences that left (cancelled, expired): free their state
                service.release([r.request_id for r in batch if r.done])
            result: Result = []
            seconds = None  # none of it ran: its requests were answered while it waited
            if live:
                if backend_log.isEnabledFor(logging.INFO):
                    backend_log.info("Backend received inference at: %d", int(time.time()))
                started = time.perf_counter()
                service.handler_seconds = 0.0
                result = self._predict(service, stream, live)
                seconds = time.perf_counter() - started
                policy.observe(seconds)
                # TorchServe's WorkerThreadTime: the batch's time outside the handler
                self.thread_seconds = max(0.0, seconds - service.handler_seconds)
                self.thread_at = time.monotonic()
            if service.continuous:
                self.kv = service.kv_usage()  # read on the loop by the step scheduler
            if live is not batch:
                result = _spread(batch, live, result)
            self._post(self._on_complete, self, batch, result, seconds)

    def _predict(self, service: Service, stream: Any, batch: Batch) -> Result:
        def intermediate(idx: int, output: Output) -> None:
            self._post(batch[idx].deliver, output)

        try:
            with _on_stream(stream):
                result = run_batch(service, batch, intermediate)
                if stream is not None:
                    stream.synchronize()
            return result
        except BaseException as exc:  # a bug outside the handler's own call, or SystemExit
            logger.exception("%s: running a batch failed", self.name)
            return BatchFailure(500, f"Internal error running the model: {type(exc).__name__}")

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(callback, *args)


_SKIPPED = Output(b"", status=504)  # never delivered: its request was answered already


def _unanswered(batch: Batch) -> Batch:
    """The requests of a batch that still wait for an answer (usually the batch itself).

    A batch may wait in the inbox while an earlier one runs; a request answered meanwhile (its
    deadline passed, its client went away) must not reach the handler. The loop owns the
    futures: this only reads their state, and a request answered after the check runs.
    """
    for request in batch:
        if request.done:
            return [r for r in batch if not r.done]
    return batch


def _spread(batch: Batch, live: Batch, result: Result) -> Result:
    """The results of `live` laid out over the whole batch, one per request, as complete wants."""
    if isinstance(result, BatchFailure):
        return result
    outputs = iter(result)
    kept = {id(request) for request in live}
    return [next(outputs) if id(request) in kept else _SKIPPED for request in batch]


@contextlib.contextmanager
def _on_stream(stream: Any) -> Iterator[None]:
    if stream is None:
        yield
        return
    import torch

    with torch.cuda.stream(stream):
        yield
