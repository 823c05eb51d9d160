"""Handler metrics (`context.metrics`): TorchServe's `model_metrics`, exported or logged.

Without a metrics.yaml every metric a handler records is made on first use, with the type,
unit and dimension names of that first call plus `Hostname`. With one (`metrics_config`), its
`model_metrics` are made up front with the declared type and dimensions (so every declared
family is listed even before a value comes, as TorchServe lists them), and a metric the file
does not declare is dropped, unless `model_metrics_auto_detect` makes it on first use.

Rendered by hand in TorchServe's shape: the metric's own name (no prefix), a counter sample
without `_total`, `Hostname` last. In the `log` and `legacy` modes nothing is rendered: every
value becomes one line on the `MODEL_METRICS` logger, in TorchServe's model_metrics.log form.
Called from executor threads; one lock guards the families.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from handlers.metrics import Declared, MetricTypes
from serve.config.metrics import MetricsSpec
from serve.telemetry.histogram import DEFAULT_BUCKETS, Buckets

logger = logging.getLogger(__name__)
metrics_log = logging.getLogger("MODEL_METRICS")  # TorchServe's log4j logger name

HOSTNAME = socket.gethostname()
_TYPES = {"counter": MetricTypes.COUNTER, "gauge": MetricTypes.GAUGE}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(slots=True)
class _Family:
    name: str
    kind: MetricTypes
    unit: str
    labels: tuple[str, ...]  # the dimension names, without Hostname
    series: dict[tuple[str, ...], list[float] | Buckets] = field(default_factory=dict)


class HandlerMetrics:
    """The sink for `context.metrics` calls (see the module docstring)."""

    def __init__(
        self,
        spec: MetricsSpec | None = None,
        auto_detect: bool = False,
        mode: str = "prometheus",
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self._reserved = reserved  # the server's own names: a handler metric may not take them
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._auto = spec is None or auto_detect
        self._log = mode != "prometheus"
        self._warned: set[str] = set()
        self._declared: list[Declared] = []
        for decl in (spec.model_metrics if spec else {}).values():
            kind = _TYPES.get(decl.kind, MetricTypes.HISTOGRAM)
            # TorchServe adds Hostname to every model metric; a file may name it already
            labels = tuple(d for d in decl.dimensions if d != "Hostname")
            self._families[decl.name] = _Family(decl.name, kind, decl.unit, labels)
            self._declared.append(Declared(decl.name, decl.unit, labels, kind))

    def declarations(self) -> Sequence[Declared]:
        """metrics.yaml's model_metrics, preloaded into every handler's cache."""
        return self._declared

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None:
        """One value from a handler (on its executor thread)."""
        with self._lock:
            family = self._families.get(name)
            if family is None:
                if not self._auto:
                    self._warn(name, "it is not declared in metrics_config's model_metrics")
                    return
                labels = tuple(n for n, _ in dimensions if n != "Hostname")
                refused = self._refusal(name, labels)
                if refused:
                    self._warn(name, refused)
                    return
                family = self._families[name] = _Family(name, metric_type, unit, labels)
            values = tuple(v for n, v in dimensions if n != "Hostname")
            if len(values) != len(family.labels):
                self._warn(name, f"its dimensions are {list(family.labels)}, got {dimensions}")
                return
            if self._log:
                self._log_line(family, dimensions, value)
                return
            cell = family.series.get(values)
            if family.kind is MetricTypes.HISTOGRAM:
                if cell is None:
                    cell = family.series[values] = Buckets(DEFAULT_BUCKETS)
                assert isinstance(cell, Buckets)
                cell.observe(value)
            elif cell is None:
                family.series[values] = [value]
            else:
                assert isinstance(cell, list)
                cell[0] = cell[0] + value if family.kind is MetricTypes.COUNTER else value

    def render(self, names: Sequence[str] = ()) -> bytes:
        """The text exposition of every family (only `names` when given); empty when logging."""
        if self._log:
            return b""
        out: list[str] = []
        with self._lock:
            for family in self._families.values():
                if names and family.name not in names:
                    continue
                _render(family, out)
        return ("\n".join(out) + "\n").encode() if out else b""

    def _log_line(
        self, family: _Family, dimensions: Sequence[tuple[str, str]], value: float
    ) -> None:
        dims = ",".join(f"{n}:{v}" for n, v in dimensions if n != "Hostname")
        metrics_log.info(
            "%s.%s:%r|#%s|#hostname:%s,timestamp:%d",
            family.name, family.unit, float(value), dims, HOSTNAME, int(time.time()),
        )  # fmt: skip

    def _refusal(self, name: str, labels: tuple[str, ...]) -> str:
        if not _NAME.fullmatch(name):
            return "it is not a valid Prometheus metric name"
        if name in self._reserved or name.startswith("serve_"):
            return "the server exports a metric of that name"
        bad = [label for label in labels if not _LABEL.fullmatch(label)]
        return f"{bad} are not valid label names" if bad else ""

    def _warn(self, name: str, reason: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("Handler metric %r is dropped: %s", name, reason)


def _render(family: _Family, out: list[str]) -> None:
    kind = family.kind.value
    out.append(f"# HELP {family.name} Torchserve prometheus {kind} metric with unit: {family.unit}")
    out.append(f"# TYPE {family.name} {kind}")
    for values, cell in family.series.items():
        pairs = [*zip(family.labels, values, strict=True), ("Hostname", HOSTNAME)]
        labels = ",".join(f'{n}="{_escape(v)}"' for n, v in pairs)
        if isinstance(cell, list):
            out.append(f"{family.name}{{{labels}}} {float(cell[0])!r}")
            continue
        for bound, count in cell.cumulative():
            out.append(f'{family.name}_bucket{{{labels},le="{bound}"}} {float(count)!r}')
        out.append(f"{family.name}_count{{{labels}}} {float(sum(cell.counts))!r}")
        out.append(f"{family.name}_sum{{{labels}}} {cell.total!r}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
