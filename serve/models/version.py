"""One registered model version: its archive, settings, batcher and executor pool."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from handlers.loader import ServiceSpec
from handlers.wire import Signature
from serve.batching.batcher import Batcher, Runner
from serve.batching.sequence_policy import SequenceSettings
from serve.batching.sequences import SequenceBatcher
from serve.batching.steps import StepScheduler
from serve.errors import InvalidModel
from serve.models.archive import ModelArchive
from serve.models.tensors import signature_from_yaml
from serve.telemetry.metrics import ServerMetrics
from serve.workers.intraop import ThreadBudget
from serve.workers.pool import Pool

STARTUP_TIMEOUT = 120.0
GENERATION_HANDLERS = ("text_generation",)  # built-ins that run under the step scheduler
MAX_RETRY_TIMEOUT = 300


@dataclass(frozen=True, slots=True)
class VersionSettings:
    """The effective settings of a model version, after every source was applied."""

    batch_size: int
    max_batch_delay: int
    min_workers: int
    max_workers: int
    response_timeout: float
    job_queue_size: int
    devices: tuple[int | None, ...]
    device_type: str  # "cpu" or "gpu"
    adaptive_batching: bool = True
    startup_timeout: float = STARTUP_TIMEOUT  # seconds a handler's initialize may take
    sequence: SequenceSettings | None = None  # stateful inference (sequenceBatching)


class ModelVersion:
    """A model version that can take requests once its executors are ready."""

    def __init__(
        self,
        *,
        archive: ModelArchive,
        name: str,
        handler: str,
        url: str,
        settings: VersionSettings,
        budget: ThreadBudget,
        metrics: ServerMetrics,
        loaded_at_startup: bool,
    ) -> None:
        self._declared = signature_from_yaml(archive.yaml_config)  # first: it may refuse the model
        self.archive = archive
        self.name = name
        self.version = archive.version
        self.handler = handler
        self.url = url
        # where the archive is in the model store (the saved file for a URL registration)
        self.store_name = url
        self.settings = settings
        self.loaded_at_startup = loaded_at_startup
        self.label = f"Model {name} version {archive.version}"
        self.metrics = metrics.for_model(name, archive.version)
        self.continuous = settings.sequence is None and is_continuous(archive.yaml_config, handler)
        self.batcher: Batcher | StepScheduler | SequenceBatcher
        if settings.sequence is not None:  # stateful, and its continuous variant
            sequences = SequenceBatcher(
                model=name,
                version=archive.version,
                batch_size=settings.batch_size,
                max_batch_delay_ms=settings.max_batch_delay,
                settings=settings.sequence,
                response_timeout=settings.response_timeout,
                on_stuck=self._replace_stuck,
                on_batch=self.metrics.dispatched,
                on_done=self.metrics.completed,
                on_deadline=self.metrics.deadline_passed,
            )
            self.metrics.live_sequences = lambda: sequences.live
            self.batcher = sequences
        elif self.continuous:
            self.batcher = StepScheduler(
                model=name,
                version=archive.version,
                batch_size=settings.batch_size,
                queue_size=settings.job_queue_size,
                response_timeout=settings.response_timeout,
                on_stuck=self._replace_stuck,
                on_step=self.metrics.dispatched,
                on_done=self.metrics.completed,
                on_deadline=self.metrics.deadline_passed,
            )
            self.metrics.generation(self.batcher)
        else:
            self.batcher = self._batcher(settings)
        self.metrics.queue_depth = lambda: self.batcher.pending
        self._metric_sink = metrics.handler_metrics
        self.pool = Pool(
            spec_for=self._spec_for,
            devices=settings.devices or (None,),
            batcher=self.batcher,
            budget=budget,
            label=self.label,
            startup_timeout=settings.startup_timeout,
        )
        self.min_workers = settings.min_workers
        self.max_workers = settings.max_workers

    @property
    def load_wait(self) -> float:
        """How long a synchronous register or scale waits: a moment past the startup timeout,
        by which every load it started is ready or has failed (the pool's own timer)."""
        return self.settings.startup_timeout + 1.0

    @property
    def generative(self) -> bool:
        """Whether the OpenAI door serves it: our generation handler (whose chunks it reads),
        under the step scheduler or, with `continuousBatching: false`, the batcher."""
        return self.handler.partition(":")[0].removesuffix(".py") in GENERATION_HANDLERS

    def _batcher(self, settings: VersionSettings) -> Batcher:
        return Batcher(
            model=self.name,
            version=self.version,
            batch_size=settings.batch_size,
            max_batch_delay_ms=settings.max_batch_delay,
            queue_size=settings.job_queue_size,
            response_timeout=settings.response_timeout,
            on_stuck=self._replace_stuck,
            on_batch=self.metrics.dispatched,
            on_done=self.metrics.completed,
            on_deadline=self.metrics.deadline_passed,
            adaptive=settings.adaptive_batching,
        )

    @property
    def signature(self) -> Signature | None:
        """Declared inputs and outputs: model-config.yaml's, else the loaded tensor handler's."""
        if self._declared is not None:
            return self._declared
        for executor in self.pool.executors:
            if executor.signature is not None:
                return executor.signature
        return None

    def _spec_for(self, device: int | None) -> ServiceSpec:
        return ServiceSpec(
            model_name=self.name,
            model_dir=self.archive.model_dir,
            manifest=self.archive.manifest,
            handler=self.handler,
            gpu_id=device,
            batch_size=self.settings.batch_size,
            yaml_config=self.archive.yaml_config,
            metric_sink=self._metric_sink,
            python_paths=(self.archive.deps_dir,) if self.archive.deps_dir else (),
            continuous=self.continuous,
            iterative=self.settings.sequence is not None and self.settings.sequence.continuous,
        )

    def _replace_stuck(self, runner: Runner) -> None:
        self.pool.replace_stuck(runner)

    @property
    def ready(self) -> bool:
        """The one readiness rule of a version (every probe, readiness route and describe):
        as many ready executors as min_workers asks, and at least one."""
        return self.pool.ready_count >= max(1, self.min_workers)

    async def scale(self, min_workers: int, max_workers: int, wait: float | None) -> bool:
        """Set the worker count; with `wait`, wait up to that long for it. True when reached."""
        self.min_workers = min_workers
        self.max_workers = max_workers
        started = self.pool.scale(min_workers)
        if wait is None:
            return True
        loaded = await self.pool.wait_loaded(started, wait)
        gone = await self.pool.wait_gone(wait)
        return loaded and gone

    async def close(self) -> None:
        """Drain queued requests (up to the response timeout), then stop every executor."""
        await self.batcher.close(self.settings.response_timeout)
        await self.pool.close(timeout=10.0)
        self.metrics.close()
        self.archive.remove()

    def describe(self) -> dict[str, Any]:
        """TorchServe's describe object (same keys, same order), plus per-worker gpuId."""
        s = self.settings
        seq = s.sequence
        rss = _rss_bytes()  # one process: every worker reports the same figure
        body: dict[str, Any] = {
            "modelName": self.name,
            "modelVersion": self.version,
            "modelUrl": self.url,
            "runtime": self.archive.runtime,
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "batchSize": s.batch_size,
            "maxBatchDelay": s.max_batch_delay,
            "responseTimeout": _number(s.response_timeout),
            "startupTimeout": _number(s.startup_timeout),
            "maxRetryTimeoutInSec": MAX_RETRY_TIMEOUT,
            "clientTimeoutInMills": 0,
            "parallelType": "",
            "parallelLevel": 0,
            "deviceType": s.device_type,
        }
        device_ids = [d for d in s.devices if d is not None]
        if device_ids:
            body["deviceIds"] = device_ids
        body.update(
            {
                "continuousBatching": self.continuous or bool(seq and seq.continuous),
                "useJobTicket": False,
                "useVenv": False,
                "stateful": seq is not None,
                "sequenceMaxIdleMSec": round(seq.max_idle * 1000) if seq else 0,
                "sequenceTimeoutMSec": round(seq.timeout * 1000) if seq and seq.timeout else 0,
                "maxNumSequence": seq.max_sequences if seq else 0,
                "maxSequenceJobQueueSize": seq.queue_size if seq else 0,
                "loadedAtStartup": self.loaded_at_startup,
                "workers": [self._worker(e, rss) for e in self.pool.executors],
                "jobQueueStatus": {
                    "remainingCapacity": max(0, s.job_queue_size - self.batcher.pending),
                    "pendingRequests": self.batcher.pending,
                },
            }
        )
        return body

    def _worker(self, executor: Any, rss: int) -> dict[str, Any]:
        started = executor.started_at
        return {
            "id": executor.id,
            "startTime": started.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{started.microsecond // 1000:03d}Z",
            "status": executor.state,
            "memoryUsage": rss,
            "pid": os.getpid(),
            "gpu": executor.device is not None,
            "gpuId": executor.device,
            "gpuUsage": "N/A",
        }


def is_continuous(yaml_config: dict[str, Any], handler: str) -> bool:
    """TorchServe's `continuousBatching: true`, or our generation handler unless the
    model-config says `continuousBatching: false` (static batching, for comparison)."""
    flag = yaml_config.get("continuousBatching")
    if flag is not None and not isinstance(flag, bool):
        raise InvalidModel(
            f"model-config.yaml: continuousBatching must be true or false, got {flag!r}"
        )
    if flag is not None:
        return flag
    return handler.partition(":")[0].removesuffix(".py") in GENERATION_HANDLERS


def _number(value: float) -> int | float:
    # whole numbers print as ints, as in TorchServe, but only where JSON's 64-bit ints hold them
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
