"""Prometheus metrics: TorchServe's names, our batching figures, handler metrics, loop lag.

TorchServe's three `ts_*` counters keep their names and labels (`model_version` is "default"
when the request named no version, as in TorchServe). Handler metrics from `context.metrics`
appear under their own names with their dimensions as labels, plus `Hostname`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from handlers.metrics import MetricTypes

logger = logging.getLogger(__name__)

disable_created_metrics()  # type: ignore[no-untyped-call]

HOSTNAME = socket.gethostname()
_MODEL_LABELS = ("model_name", "model_version")
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

    def render(self, names: Sequence[str] = ()) -> bytes:
        """The text exposition of the three counters (only `names` when given)."""
        lines: list[str] = []
        for name, unit in self.NAMES:
            if names and name not in names:
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


class ServerMetrics:
    """Every metric the server exposes on /metrics."""

    def __init__(self) -> None:
        self.ts = TsCounters()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_seconds = Histogram(
            "serve_queue_seconds",
            "Time a request waited in the batcher's queue before dispatch",
            _MODEL_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "serve_batch_size",
            "Requests per batch sent to a handler",
            _MODEL_LABELS,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.executions = Counter(
            "serve_executions", "Batches run by handlers", _MODEL_LABELS, registry=r
        )
        self.inferences = Counter(
            "serve_inferences",
            "Requests run by handlers (summed over batches)",
            _MODEL_LABELS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "serve_event_loop_lag_seconds",
            "Latest measured event loop scheduling delay",
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "serve_event_loop_lag_max_seconds",
            "Largest event loop scheduling delay since start",
            registry=r,
        )
        self.handler_metrics = HandlerMetrics(r)

    def for_model(self, name: str, version: str) -> ModelMetrics:
        """The cached children for one model version."""
        return ModelMetrics(self, name, version)

    def render(self, names: Sequence[str] = ()) -> bytes:
        """The Prometheus text exposition (only the metrics in `names` when given)."""
        registry = self.registry.restricted_registry(names) if names else self.registry
        return self.ts.render(names) + generate_latest(registry)


class ModelMetrics:
    """Metric children of one model version, looked up once rather than per request."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str) -> None:
        self._metrics = metrics
        self._name = name
        self._queue_seconds = metrics.queue_seconds.labels(name, version)
        self._batch_size = metrics.batch_size.labels(name, version)
        self._executions = metrics.executions.labels(name, version)
        self._inferences = metrics.inferences.labels(name, version)
        self._ts: dict[str, tuple[list[float], ...]] = {}

    def dispatched(self, batch: Sequence[Any], now: float) -> None:
        """A batch left the queue (called by the batcher on the loop)."""
        self._executions.inc()
        self._inferences.inc(len(batch))
        self._batch_size.observe(len(batch))
        for request in batch:
            self._queue_seconds.observe(now - request.arrival)

    def answered(self, url_version: str | None, seconds: float, queued: float) -> None:
        """One predict request was answered: TorchServe's three counters."""
        label = url_version or "default"
        cells = self._ts.get(label)
        if cells is None:
            ts = self._metrics.ts
            cells = self._ts[label] = tuple(ts.cell(n, self._name, label) for n, _ in ts.NAMES)
        cells[0][0] += 1
        cells[1][0] += seconds * 1e6
        cells[2][0] += queued * 1e6


class HandlerMetrics:
    """The sink for `context.metrics` calls: one Prometheus metric per name, made on first use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._refused: set[str] = set()

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None:
        labels = (*(n for n, _ in dimensions), "Hostname")
        values = [v for _, v in dimensions] + [HOSTNAME]
        metric = self._metric(name, unit, metric_type, labels)
        if metric is None:
            return
        child = metric.labels(*values)
        if metric_type is MetricTypes.COUNTER:
            child.inc(value)
        elif metric_type is MetricTypes.GAUGE:
            child.set(value)
        else:
            child.observe(value)

    def _metric(
        self, name: str, unit: str, metric_type: MetricTypes, labels: tuple[str, ...]
    ) -> Any:
        with self._lock:
            known = self._metrics.get(name)
            if known is not None:
                metric, known_labels = known
                if known_labels == labels:
                    return metric
                self._refuse(name, f"labels {labels} differ from the first use {known_labels}")
                return None
            if name in self._refused:
                return None
            kind = {MetricTypes.COUNTER: Counter, MetricTypes.GAUGE: Gauge}.get(
                metric_type, Histogram
            )
            doc = f"Torchserve prometheus {metric_type.value} metric with unit: {unit}"
            try:
                metric = kind(name, doc, labels, registry=self._registry)
            except ValueError as exc:
                self._refuse(name, str(exc))
                return None
            self._metrics[name] = (metric, labels)
            return metric

    def _refuse(self, name: str, reason: str) -> None:
        if name not in self._refused:
            self._refused.add(name)
            logger.warning("Handler metric %r is not exported: %s", name, reason)


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
