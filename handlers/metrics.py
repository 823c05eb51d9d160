"""TorchServe's handler-side metrics API (`context.metrics`), forwarding to a server sink.

Handlers call `add_counter`, `add_time`, `add_metric_to_cache(...).add_or_update(...)` and so
on exactly as under TorchServe; each call becomes one `MetricSink.record`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


class MetricTypes(enum.Enum):
    """The three metric kinds TorchServe knows."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Dimension:
    """A metric label: name and value."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def to_dict(self) -> dict[str, str]:
        """The dimension as TorchServe's JSON form."""
        return {"Name": self.name, "Value": self.value}


class MetricsCacheKeyError(KeyError):
    """No such metric in the cache (TorchServe's `ts.metrics.metric_cache_errors` name)."""


@dataclass(frozen=True, slots=True)
class Declared:
    """A metric the server's metrics.yaml declares (`model_metrics`), known before initialize."""

    name: str
    unit: str
    dimension_names: tuple[str, ...]
    metric_type: MetricTypes


class MetricSink(Protocol):
    """Where handler metrics go (the server exposes them on /metrics)."""

    def declarations(self) -> Sequence[Declared]:
        """The declared metrics, put in every handler's cache before `initialize`."""
        ...

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None: ...


class NullSink:
    """Drops every metric (used when a handler runs outside a server)."""

    def declarations(self) -> Sequence[Declared]:
        return ()

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None:
        return None


# TorchServe's backend passes the short unit on (`HandlerTime.ms:...`); so do we
_TIME_UNITS = ("ms", "s")
_DEFAULT_DIMS = ("ModelName", "Level")
_SIZE_UNITS = ("MB", "kB", "GB", "B")


class CachingMetric:
    """A declared metric; `add_or_update` records one value with its dimension values."""

    def __init__(
        self,
        sink: MetricSink,
        metric_name: str,
        unit: str,
        dimension_names: Sequence[str] = (),
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> None:
        self.metric_name = metric_name
        self.unit = unit
        self.dimension_names = list(dimension_names)
        self.metric_type = metric_type
        self._sink = sink

    def add_or_update(
        self, value: float, dimension_values: Sequence[str] = (), request_id: str = ""
    ) -> None:
        """Record a value; dimension values pair with the declared names in order."""
        self.bind(dimension_values)(value)

    def bind(self, dimension_values: Sequence[str] = ()) -> Callable[[float], None]:
        """A recorder of values for these dimension values (checked once, not per value).

        As in TorchServe, a wrong number of values or a negative counter update is logged as
        an error and skipped: a metric never fails the request.
        """
        name, unit, metric_type = self.metric_name, self.unit, self.metric_type
        if len(dimension_values) != len(self.dimension_names):
            values = list(dimension_values)

            def refuse(value: float) -> None:
                logger.error(
                    "[METRICS]Failed to update metric with name:%s with value: %s: Dimension "
                    "values: %s should correspond to Dimension names: %s",
                    name, value, values, self.dimension_names,
                )  # fmt: skip

            return refuse
        names = self.dimension_names
        pairs = tuple((n, str(v)) for n, v in zip(names, dimension_values, strict=True))
        record = self._sink.record
        counter = metric_type is MetricTypes.COUNTER

        def add(value: float) -> None:
            if counter and value < 0:
                logger.error(
                    "[METRICS]Failed to update metric with name:%s with value: %s: "
                    "Counter metric update value cannot be negative",
                    name, value,
                )  # fmt: skip
                return
            record(name, unit, metric_type, pairs, float(value))

        return add

    def update(
        self, value: float, request_id: str = "", dimensions: Sequence[Dimension] = ()
    ) -> None:
        """Record a value with Dimension objects (TorchServe's older API: they set the names)."""
        self.dimension_names = [d.name for d in dimensions]
        self.add_or_update(value, [d.value for d in dimensions], request_id)


class MetricsCache:
    """`context.metrics`: TorchServe's MetricsCacheYamlImpl API."""

    def __init__(self, sink: MetricSink, model_name: str) -> None:
        self._sink = sink
        self._model_name = model_name
        self._metrics: dict[tuple[str, MetricTypes], CachingMetric] = {}
        # recorders of the metrics added without dimensions (HandlerTime, PredictionTime)
        self._plain: dict[tuple[str, str, MetricTypes], Callable[[float], None]] = {}
        self._default_values = (model_name, "Model")
        self.request_ids: dict[int, str] | None = None
        self.model_name = model_name
        for d in sink.declarations():  # metrics.yaml's model_metrics, as TorchServe preloads
            self.add_metric_to_cache(d.name, d.unit, d.dimension_names, d.metric_type)

    def add_metric_to_cache(
        self,
        metric_name: str,
        unit: str,
        dimension_names: Sequence[str] = (),
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> CachingMetric:
        """Declare a metric (emits nothing yet) and return it; it replaces one of that name."""
        key = (metric_name, metric_type)
        metric = CachingMetric(self._sink, metric_name, unit, dimension_names, metric_type)
        if key in self._metrics:
            logger.warning("Overriding existing key %s:%s", metric_type, metric_name)
            self._plain = {k: v for k, v in self._plain.items() if k[0] != metric_name}
        self._metrics[key] = metric
        return metric

    def get_metric(
        self, metric_name: str, metric_type: MetricTypes = MetricTypes.COUNTER
    ) -> CachingMetric:
        """A metric declared earlier (metrics.yaml or `add_metric_to_cache`); raises if none."""
        try:
            return self._metrics[(metric_name, metric_type)]
        except KeyError:
            raise MetricsCacheKeyError(
                f"Metric of type '{metric_type}' and name '{metric_name}' doesn't exist"
            ) from None

    def _get_or_add(
        self, name: str, unit: str, dimension_names: Sequence[str], metric_type: MetricTypes
    ) -> CachingMetric:
        metric = self._metrics.get((name, metric_type))
        if metric is None:
            metric = self.add_metric_to_cache(name, unit, dimension_names, metric_type)
        return metric

    def add_metric(
        self,
        name: str,
        value: float,
        unit: str,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> None:
        """Record a value; ModelName and Level=Model are added last unless already given."""
        if not dimensions:  # the common case (HandlerTime, PredictionTime): no lists to build
            key = (name, unit, metric_type)
            add = self._plain.get(key)
            if add is None:
                metric = self._get_or_add(name, unit, _DEFAULT_DIMS, metric_type)
                add = self._plain[key] = metric.bind(self._default_values)
            add(value)
            return
        dims = list(dimensions)
        given = {d.name for d in dims}
        if "ModelName" not in given:
            dims.append(Dimension("ModelName", self._model_name))
        if "Level" not in given:
            dims.append(Dimension("Level", "Model"))
        metric = self._get_or_add(name, unit, [d.name for d in dims], metric_type)
        metric.add_or_update(value, [d.value for d in dims])

    def add_counter(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
    ) -> None:
        """Increase a counter (unit count)."""
        self.add_metric(name, value, "count", idx, dimensions, MetricTypes.COUNTER)

    def add_time(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        unit: str = "ms",
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        """Record a duration in `ms` or `s`."""
        if unit not in _TIME_UNITS:
            raise ValueError(f"the unit for a timed metric should be one of {list(_TIME_UNITS)}")
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_size(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        unit: str = "MB",
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        """Record a size in `MB`, `kB`, `GB` or `B`."""
        if unit not in _SIZE_UNITS:
            raise ValueError(f"the unit for a size metric must be one of {list(_SIZE_UNITS)}")
        self.add_metric(name, value, unit, idx, dimensions, metric_type)

    def add_percent(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        """Record a percentage."""
        self.add_metric(name, value, "percent", idx, dimensions, metric_type)

    def add_error(self, name: str, value: float, dimensions: Sequence[Dimension] = ()) -> None:
        """Count an error (dimension Level=Error)."""
        dims = list(dimensions)
        if "Level" not in {d.name for d in dims}:
            dims.append(Dimension("Level", "Error"))
        metric = self._get_or_add(name, "", [d.name for d in dims], MetricTypes.COUNTER)
        metric.add_or_update(value, [d.value for d in dims])
