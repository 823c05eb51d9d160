"""Prometheus metrics: TorchServe's names, our batching figures, handler metrics, loop lag.

TorchServe's frontend and host metrics (Requests2XX, QueueTime, CPUUtilization, ...) are in
serve.telemetry.torchserve.

TorchServe's three `ts_*` counters keep their names and labels (`model_version` is "default"
when the request named no version, as in TorchServe). Handler metrics from `context.metrics`
appear under their own names with their dimensions as labels, plus `Hostname`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from serve.config.metrics import MetricDecl, MetricsSpec
from serve.telemetry.handler_metrics import HandlerMetrics
from serve.telemetry.histogram import Buckets
from serve.telemetry.host import HostFigures, HostReader
from serve.telemetry.tokens import Figures, TokenMetrics
from serve.telemetry.tokens import families as token_families
from serve.telemetry.torchserve import NAMES as FRONTEND_NAMES
from serve.telemetry.torchserve import FrontendLog, StatusCounts
from serve.telemetry.torchserve import render as render_frontend

logger = logging.getLogger(__name__)

disable_created_metrics()  # type: ignore[no-untyped-call]

HOSTNAME = socket.gethostname()
_MODEL_LABELS = ("model_name", "model_version")
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_AGREEMENT = ("equal", "different", "not_json")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class TsCounters:
    """TorchServe's three counters, rendered by hand so their names match exactly.

    prometheus_client appends `_total` to every counter; TorchServe exposes
    `ts_inference_latency_microseconds` and `ts_queue_latency_microseconds` without it.
    """

    NAMES = (
        ("ts_inference_requests_total", "Count"),
        ("ts_inference_latency_microseconds", "Microseconds"),
        ("ts_queue_latency_microseconds", "Microseconds"),
    )

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[str, str], list[float]]] = {n: {} for n, _ in self.NAMES}

    def cell(self, name: str, model: str, version: str) -> list[float]:
        """A one-element list to add to (kept by callers, so no lookup per request)."""
        series = self.values[name]
        cell = series.get((model, version))
        if cell is None:
            cell = series[(model, version)] = [0.0]
        return cell

    def render(
        self, names: Sequence[str] = (), declared: Mapping[str, MetricDecl] | None = None
    ) -> bytes:
        """The text exposition of the three counters (only `names`, `declared` when given)."""
        lines: list[str] = []
        for name, unit in self.NAMES:
            if (names and name not in names) or (declared is not None and name not in declared):
                continue
            lines.append(f"# HELP {name} Torchserve prometheus counter metric with unit: {unit}")
            lines.append(f"# TYPE {name} counter")
            for (model, version), cell in sorted(self.values[name].items()):
                labels = (
                    f'model_name="{_escape(model)}",model_version="{_escape(version)}",'
                    f'hostname="{_escape(HOSTNAME)}"'
                )
                lines.append(f"{name}{{{labels}}} {cell[0]!r}")
        return ("\n".join(lines) + "\n").encode() if lines else b""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ModelMetrics:
    """Figures of one model version: batching counters and histograms, and TorchServe's
    three counters. Plain numbers, read by `BatchingCollector` at scrape time."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        self._metrics = metrics
        self.name = name
        self.version = version
        self.executions = 0
        self.inferences = 0
        self.batch_sizes = Buckets(_BATCH_BUCKETS)
        self.queue_seconds = Buckets(_LATENCY_BUCKETS)
        self.batch_seconds = Buckets(_LATENCY_BUCKETS)
        self.queue_depth: Callable[[], int] = lambda: 0  # the batcher's, once it exists
        self.live_sequences: Callable[[], int] | None = None  # a stateful model's open sequences
        self.deadlines_passed = {"queued": 0, "running": 0}
        self._ts: dict[str, tuple[list[float], ...]] = {}
        # by the version that answered, whatever the URL named: what an A/B split compares
        self.requests_ok = 0
        self.requests_error = 0
        self.request_seconds = Buckets(_LATENCY_BUCKETS)
        # copies of another version's traffic sent here by a shadow split
        self.shadow_ok = 0
        self.shadow_error = 0
        self.shadow_dropped = 0
        self.shadow_seconds = Buckets(_LATENCY_BUCKETS)
        self.agreement = dict.fromkeys(_AGREEMENT, 0)
        self.tokens: TokenMetrics | None = None  # a generative version's (serve.telemetry.tokens)

    def generation(self, figures: Figures | None = None) -> TokenMetrics:
        """This version's token figures (created on first use; `figures`: its step scheduler)."""
        if self.tokens is None:
            self.tokens = TokenMetrics(figures)
        elif figures is not None:
            self.tokens.figures = figures
        return self.tokens

    def dispatched(self, batch: Sequence[Any], now: float) -> None:
        """A batch left the queue (called by the batcher on the loop)."""
        items = 0
        observe = self.queue_seconds.observe
        for request in batch:
            observe(now - request.arrival)
            items += request.items  # KServe v1 instances and tensor rows count one by one
        self.executions += 1
        self.inferences += items
        self.batch_sizes.observe(items)
        self._metrics.queue_time_ms = queued_ms = (now - batch[-1].arrival) * 1000
        log = self._metrics.frontend_log
        if log is not None:
            log.emit("QueueTime", "Milliseconds", "Level:Host", queued_ms)

    def completed(self, seconds: float) -> None:
        """A handler finished a batch after `seconds` of compute (called on the loop)."""
        self.batch_seconds.observe(seconds)

    def deadline_passed(self, stage: str) -> None:
        """A request was answered 504 when its deadline passed while `queued` or `running`."""
        self.deadlines_passed[stage] += 1

    def answered(
        self, url_version: str | None, seconds: float, queued: float, ok: bool = True
    ) -> None:
        """One predict request was answered: TorchServe's three counters, ours by version."""
        if ok:
            self.requests_ok += 1
        else:
            self.requests_error += 1
        self.request_seconds.observe(seconds)
        label = url_version or "default"
        cells = self._ts.get(label)
        if cells is None:
            ts = self._metrics.ts
            cells = self._ts[label] = tuple(ts.cell(n, self.name, label) for n, _ in ts.NAMES)
        cells[0][0] += 1
        cells[1][0] += seconds * 1e6
        cells[2][0] += queued * 1e6
        if self._metrics.mode == "log":  # legacy keeps these three on /metrics
            log = self._metrics.frontend_log
            assert log is not None
            dims = f"model_name:{self.name},model_version:{label}"
            log.emit("ts_inference_requests_total", "Count", dims, 1)
            log.emit("ts_inference_latency_microseconds", "Microseconds", dims, seconds * 1e6)
            log.emit("ts_queue_latency_microseconds", "Microseconds", dims, queued * 1e6)

    def count_agreement(self, result: str) -> None:
        """A shadow answer compared with the primary's: equal, different or not_json."""
        self.agreement[result] += 1

    def close(self) -> None:
        """Stop exporting this version's batching figures (it was unregistered)."""
        self._metrics.batching.models.pop((self.name, self.version), None)


class BatchingCollector:
    """Exports every model version's batching figures when Prometheus scrapes."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], ModelMetrics] = {}

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> list[Metric]:
        return list(self._families(list(self.models.values())))

    def _families(self, models: list[ModelMetrics]) -> Iterator[Metric]:
        labels = list(_MODEL_LABELS)
        executions = CounterMetricFamily(
            "serve_executions", "Batches run by handlers", labels=labels
        )
        inferences = CounterMetricFamily(
            "serve_inferences",
            "Batch items run by handlers (requests; KServe instances and tensor rows one by one)",
            labels=labels,
        )
        sizes = HistogramMetricFamily(
            "serve_batch_size",
            "Batch items (requests, KServe instances, tensor rows) per handler call",
            labels=labels,
        )
        queued = HistogramMetricFamily(
            "serve_queue_seconds",
            "Time a request waited in the batcher's queue before dispatch",
            labels=labels,
        )
        computed = HistogramMetricFamily(
            "serve_batch_seconds",
            "Time a batch spent in its handler (compute), from start to answers",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            "serve_queue_depth", "Requests waiting in the batcher's queue", labels=labels
        )
        sequences = GaugeMetricFamily(
            "serve_sequences_live",
            "Open sequences of a stateful model (sequenceBatching)",
            labels=labels,
        )
        deadlines = CounterMetricFamily(
            "serve_deadline_exceeded",
            "Requests answered 504 because their deadline passed, by where they were",
            labels=[*labels, "stage"],
        )
        requests = CounterMetricFamily(
            "serve_requests",
            "Prediction requests answered, by the version that served them (routed or named)",
            labels=[*labels, "outcome"],
        )
        latency = HistogramMetricFamily(
            "serve_request_seconds",
            "Time from a request's arrival to its answer, by the version that served it",
            labels=labels,
        )
        shadow = CounterMetricFamily(
            "serve_shadow_requests",
            "Shadow copies sent to a version: answered ok, failed, or dropped (queue full)",
            labels=[*labels, "outcome"],
        )
        agreement = CounterMetricFamily(
            "serve_shadow_agreement",
            "Shadow answers compared with the primary's: equal, different or not_json",
            labels=[*labels, "result"],
        )
        shadow_latency = HistogramMetricFamily(
            "serve_shadow_seconds",
            "Time from a shadow copy's queueing to its answer",
            labels=labels,
        )
        for m in models:
            key = [m.name, m.version]
            for stage, count in m.deadlines_passed.items():
                deadlines.add_metric([*key, stage], count)
            requests.add_metric([*key, "ok"], m.requests_ok)
            requests.add_metric([*key, "error"], m.requests_error)
            latency.add_metric(key, m.request_seconds.cumulative(), m.request_seconds.total)
            if m.shadow_ok or m.shadow_error or m.shadow_dropped:
                shadow.add_metric([*key, "ok"], m.shadow_ok)
                shadow.add_metric([*key, "error"], m.shadow_error)
                shadow.add_metric([*key, "dropped"], m.shadow_dropped)
                for result, count in m.agreement.items():
                    agreement.add_metric([*key, result], count)
                shadow_latency.add_metric(
                    key, m.shadow_seconds.cumulative(), m.shadow_seconds.total
                )
            executions.add_metric(key, m.executions)
            inferences.add_metric(key, m.inferences)
            sizes.add_metric(key, m.batch_sizes.cumulative(), m.batch_sizes.total)
            queued.add_metric(key, m.queue_seconds.cumulative(), m.queue_seconds.total)
            computed.add_metric(key, m.batch_seconds.cumulative(), m.batch_seconds.total)
            depth.add_metric(key, m.queue_depth())
            if m.live_sequences is not None:
                sequences.add_metric(key, m.live_sequences())
        yield from (executions, inferences, sizes, queued, computed, depth, sequences, deadlines)
        yield from (requests, latency, shadow, agreement, shadow_latency)
        yield from token_families((m.name, m.version, m.tokens) for m in models if m.tokens)


class ServerMetrics:
    """Every metric the server exposes on /metrics.

    `mode` is TorchServe's metrics_mode: `prometheus` renders everything; `legacy` renders only
    the three `ts_*` counters of TorchServe's and logs the other frontend metrics (TS_METRICS)
    and the handler metrics (MODEL_METRICS); `log` logs them all. Our own `serve_*` figures
    are on /metrics in every mode. `spec` (metrics.yaml) limits TorchServe's to those declared.
    """

    def __init__(
        self,
        gpu_count: int = 0,
        *,
        spec: MetricsSpec | None = None,
        mode: str = "prometheus",
        auto_detect: bool = False,
    ) -> None:
        self.mode = mode
        self.declared = spec.ts_metrics if spec is not None else None
        self.frontend_log = FrontendLog(self.declared) if mode != "prometheus" else None
        self.ts = TsCounters()
        self.statuses = StatusCounts(self.frontend_log)  # TorchServe's Requests2XX/4XX/5XX
        self.queue_time_ms: float | None = None  # TorchServe's QueueTime: the last request's
        self.host = HostReader(gpu_count)
        self.registry = CollectorRegistry(auto_describe=True)
        self.batching = BatchingCollector()
        self.registry.register(self.batching)
        self.loop_lag = Gauge(
            "serve_event_loop_lag_seconds",
            "Latest measured event loop scheduling delay",
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "serve_event_loop_lag_max_seconds",
            "Largest event loop scheduling delay since start",
            registry=self.registry,
        )
        reserved = FRONTEND_NAMES | {n for n, _ in TsCounters.NAMES}
        self.handler_metrics = HandlerMetrics(spec, auto_detect, mode, reserved)

    def for_model(self, name: str, version: str) -> ModelMetrics:
        """The figures of one model version (exported until it is closed)."""
        model = ModelMetrics(self, name, version)
        self.batching.models[(name, version)] = model
        return model

    def render(
        self,
        names: Sequence[str] = (),
        *,
        host: HostFigures | None = None,
        worker_loads: Sequence[tuple[str, float]] = (),
        worker_thread_ms: float | None = None,
    ) -> bytes:
        """The Prometheus text exposition (only the metrics in `names` when given).

        `host`, `worker_loads` (executor name, load ms) and `worker_thread_ms` (the newest
        batch's time outside its handler) are read by the caller at scrape time.
        """
        registry = self.registry.restricted_registry(names) if names else self.registry
        ours = generate_latest(registry)
        if self.mode == "log":
            return ours
        ts = self.ts.render(names, self.declared)
        if self.mode == "legacy":
            return ts + ours
        frontend = render_frontend(
            self.statuses,
            self.queue_time_ms,
            worker_loads,
            host,
            names,
            worker_thread_ms=worker_thread_ms,
            declared=self.declared,
            rendered_elsewhere=[n for n, _ in TsCounters.NAMES],
        )
        return ts + frontend + self.handler_metrics.render(names) + ours


async def watch_loop_lag(metrics: ServerMetrics, interval: float = 0.05) -> None:
    """Measure how late the loop wakes us; a blocked loop shows as lag."""
    worst = 0.0
    while True:
        start = time.perf_counter()
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - start - interval)
        metrics.loop_lag.set(lag)
        if lag > worst:
            worst = lag
            metrics.loop_lag_max.set(worst)
