"""The sink for a handler's `context.metrics` calls: one Prometheus metric per name.

Handler metrics appear under their own names with their dimensions as labels, plus
`Hostname`; each call is also a model_metrics.log line (serve.telemetry.log_files).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from handlers.metrics import MetricTypes
from serve.telemetry.log_files import MODEL_METRICS, metric_line
from serve.telemetry.torchserve import HOSTNAME

logger = logging.getLogger(__name__)
_model_metrics_log = logging.getLogger(MODEL_METRICS)
_LOG_UNITS = {"Milliseconds": "ms"}


class HandlerMetrics:
    """The sink for `context.metrics` calls: one Prometheus metric per name, made on first use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._metrics: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._refused: set[str] = set()
        # (name, dimensions) -> the labelled child: handlers record per batch, often the same
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None:
        if _model_metrics_log.isEnabledFor(logging.INFO):  # model_metrics.log (log_files)
            short = _LOG_UNITS.get(unit, unit)  # TorchServe's model_metrics.log says `ms`
            _model_metrics_log.info("%s", metric_line(name, short, value, dimensions))
        key = (name, tuple(dimensions))
        child = self._children.get(key)
        if child is None:
            labels = (*(n for n, _ in dimensions), "Hostname")
            metric = self._metric(name, unit, metric_type, labels)
            if metric is None:
                return
            child = metric.labels(*(v for _, v in dimensions), HOSTNAME)
            self._children[key] = child
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
