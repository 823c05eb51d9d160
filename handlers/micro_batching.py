"""TorchServe's `MicroBatching` (`ts.handler_utils.micro_batching`): a batch split into slices
that flow through preprocess → inference → postprocess, each stage served by its own threads,
so one slice's preprocessing overlaps another's inference.

A handler uses it as in TorchServe's example: `self.handle = MicroBatching(self)` in
`__init__`, then `micro_batch_size` and `parallelism` set in `initialize`. Unlike TorchServe,
an exception in a stage fails the batch (it is raised from `handle`) instead of killing the
stage thread and leaving the batch waiting for its response timeout.
"""

from __future__ import annotations

import inspect
import itertools
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from copy import copy
from dataclasses import dataclass
from typing import Any

HANDLER_METHODS = ["preprocess", "inference", "postprocess"]
_POLL = 0.5  # how often an idle stage thread checks whether it should stop


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


@dataclass
class WorkerThread:
    """One stage thread and the event that stops it."""

    event: threading.Event
    thread: threading.Thread


def _stage(
    in_queue: queue.Queue[tuple[int, Any]],
    out_queue: queue.Queue[tuple[int, Any]],
    method: Callable[[], Callable[[Any], Any] | None],
    local: threading.local,
    event: threading.Event,
) -> None:
    # a weak reference: the thread must not keep its handler (and so itself) alive forever
    while not event.is_set():
        try:
            idx, data = in_queue.get(timeout=_POLL)
        except queue.Empty:
            continue
        call = method()
        if call is None:
            return
        if isinstance(data, _Failure):  # an earlier stage failed: pass it on to handle()
            out_queue.put((idx, data))
            continue
        local.micro_batch_idx = idx
        try:
            out_queue.put((idx, call(data)))
        except BaseException as exc:
            out_queue.put((idx, _Failure(exc)))
        del call


def _weak(method: Any) -> Callable[[], Callable[[Any], Any] | None]:
    if inspect.ismethod(method):
        return weakref.WeakMethod(method)
    return lambda: method  # a plain function set on the handler holds no reference to it


class MicroBatching:
    """Runs a handler's three stages over slices of `micro_batch_size`, in parallel threads."""

    def __init__(
        self,
        parent_handler: Any,
        micro_batch_size: int = 1,
        parallelism: dict[str, int] | None = None,
    ) -> None:
        self.handler = parent_handler
        self.micro_batch_size = micro_batch_size
        self._parallelism: dict[str, int] = dict(parallelism or {})
        self.thread_groups: dict[str, list[WorkerThread]] = {c: [] for c in HANDLER_METHODS}
        self.queues: dict[str, queue.Queue[tuple[int, Any]]] = {}
        self.thread_local_data = threading.local()
        self._lock = threading.Lock()  # one batch at a time flows through the queues
        self._create_queues()
        self._update_threads()

    def __del__(self) -> None:
        for group in getattr(self, "thread_groups", {}).values():
            for worker in group:
                worker.event.set()

    @property
    def parallelism(self) -> dict[str, int]:
        """Threads per stage (a copy; assign a dict to change it)."""
        return copy(self._parallelism)

    @parallelism.setter
    def parallelism(self, parallelism: dict[str, int]) -> None:
        unknown = [k for k in parallelism if k not in HANDLER_METHODS]
        if unknown:
            raise ValueError(f"parallelism keys must be among {HANDLER_METHODS}, got {unknown}")
        self._parallelism.update(parallelism)
        self._update_threads()

    def shutdown(self) -> None:
        """Stop and join every stage thread."""
        for group in self.thread_groups.values():
            for worker in group:
                worker.event.set()
            for worker in group:
                worker.thread.join()
            group.clear()

    def get_micro_batch_idx(self) -> int | None:
        """The index of the slice this stage thread works on."""
        return getattr(self.thread_local_data, "micro_batch_idx", None)

    def _create_queues(self) -> None:
        self.queues[HANDLER_METHODS[0] + "_in"] = queue.Queue()
        for current, following in itertools.pairwise(HANDLER_METHODS):
            self.queues[current + "_out"] = self.queues[following + "_in"] = queue.Queue()
        self.queues[HANDLER_METHODS[-1] + "_out"] = queue.Queue()

    def _update_threads(self) -> None:
        for stage in HANDLER_METHODS:
            target = self._parallelism.get(stage, 1)
            if target < 0:
                raise ValueError(f"parallelism of {stage} must be at least 0, got {target}")
            group = self.thread_groups[stage]
            while len(group) < target:
                event = threading.Event()
                thread = threading.Thread(
                    target=_stage,
                    args=(
                        self.queues[stage + "_in"],
                        self.queues[stage + "_out"],
                        _weak(getattr(self.handler, stage)),
                        self.thread_local_data,
                        event,
                    ),
                    name=f"micro-batching-{stage}",
                    daemon=True,
                )
                thread.start()
                group.append(WorkerThread(event, thread))
            while len(group) > target:
                worker = group.pop()
                worker.event.set()
                worker.thread.join()

    def handle(self, data: list[Any]) -> list[Any]:
        """Split `data` into slices, run them through the stages, and join the results in order."""
        size = max(1, int(self.micro_batch_size))
        with self._lock:
            slices = [data[i : i + size] for i in range(0, len(data), size)]
            for idx, part in enumerate(slices):
                self.queues[HANDLER_METHODS[0] + "_in"].put_nowait((idx, part))
            done = self.queues[HANDLER_METHODS[-1] + "_out"]
            output = sorted((done.get() for _ in slices), key=lambda item: item[0])
        for _, result in output:
            if isinstance(result, _Failure):
                raise result.error
        return [item for _, result in output for item in result]

    def __call__(self, data: list[Any], context: Any) -> Any:
        """The handler's entry point: describe, explain, or the micro-batched stages."""
        start = time.time()
        handler = self.handler
        handler.context = context
        if os.environ.get("ENABLE_TORCH_PROFILER") and hasattr(handler, "_infer_with_profiler"):
            output, _ = handler._infer_with_profiler(data=data)
        elif handler._is_describe():
            output = [handler.describe_handle()]
        elif handler._is_explain():
            output = handler.explain_handle(handler.preprocess(data), data)
        else:
            output = self.handle(data)
        if context.metrics is not None:
            context.metrics.add_time(
                "HandlerTime", round((time.time() - start) * 1000, 2), None, "ms"
            )
        return output
