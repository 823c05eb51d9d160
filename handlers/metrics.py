"""TorchServe's handler-side metrics API (`context.metrics`), forwarding to a server sink.

Handlers call `add_counter`, `add_time`, `add_metric_to_cache(...).add_or_update(...)` and so
on exactly as under TorchServe; each call becomes one `MetricSink.record`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol


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


class MetricSink(Protocol):
    """Where handler metrics go (the server exposes them on /metrics)."""

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

    def record(
        self,
        name: str,
        unit: str,
        metric_type: MetricTypes,
        dimensions: Sequence[tuple[str, str]],
        value: float,
    ) -> None:
        return None


_TIME_UNITS = {"ms": "Milliseconds", "s": "Seconds"}
_DEFAULT_DIMS = ("ModelName", "Level")
_SIZE_UNITS = {"MB": "Megabytes", "kB": "Kilobytes", "GB": "Gigabytes", "B": "Bytes"}


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
        """A recorder of values for these dimension values (checked once, not per value)."""
        if len(dimension_values) != len(self.dimension_names):
            raise ValueError(
                f"metric {self.metric_name!r} has dimensions {self.dimension_names}, "
                f"got values {list(dimension_values)}"
            )
        names = self.dimension_names
        pairs = tuple((n, str(v)) for n, v in zip(names, dimension_values, strict=True))
        name, unit, metric_type = self.metric_name, self.unit, self.metric_type
        record = self._sink.record
        counter = metric_type is MetricTypes.COUNTER

        def add(value: float) -> None:
            if counter and value < 0:
                raise ValueError(f"counter {name!r} cannot be updated by a negative value")
            record(name, unit, metric_type, pairs, float(value))

        return add

    def update(
        self, value: float, request_id: str = "", dimensions: Sequence[Dimension] = ()
    ) -> None:
        """Record a value with Dimension objects."""
        values = [d.value for d in dimensions] if dimensions else []
        if not dimensions and self.dimension_names:
            raise ValueError(f"metric {self.metric_name!r} needs dimensions {self.dimension_names}")
        self.add_or_update(value, values, request_id)


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

    def add_metric_to_cache(
        self,
        metric_name: str,
        unit: str,
        dimension_names: Sequence[str] = (),
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> CachingMetric:
        """Declare a metric (emits nothing yet) and return it."""
        key = (metric_name, metric_type)
        metric = self._metrics.get(key)
        if metric is None:
            metric = CachingMetric(self._sink, metric_name, unit, dimension_names, metric_type)
            self._metrics[key] = metric
        return metric

    def get_metric(
        self, metric_name: str, metric_type: MetricTypes = MetricTypes.COUNTER
    ) -> CachingMetric:
        """A metric declared earlier; raises if there is none."""
        try:
            return self._metrics[(metric_name, metric_type)]
        except KeyError:
            raise KeyError(
                f"metric {metric_name!r} of type {metric_type.value} was not added to the cache"
            ) from None

    def add_metric(
        self,
        name: str,
        value: float,
        unit: str,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.COUNTER,
    ) -> None:
        """Record a value; the default dimensions ModelName and Level=Model are added last."""
        if not dimensions:  # the common case (HandlerTime, PredictionTime): no lists to build
            key = (name, unit, metric_type)
            add = self._plain.get(key)
            if add is None:
                metric = self.add_metric_to_cache(name, unit, _DEFAULT_DIMS, metric_type)
                add = self._plain[key] = metric.bind(self._default_values)
            add(value)
            return
        dims = [
            *(dimensions or []),
            Dimension("ModelName", self._model_name),
            Dimension("Level", "Model"),
        ]
        metric = self.add_metric_to_cache(name, unit, [d.name for d in dims], metric_type)
        metric.add_or_update(value, [d.value for d in dims])

    def add_counter(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
    ) -> None:
        """Increase a counter (unit Count)."""
        self.add_metric(name, value, "Count", idx, dimensions, MetricTypes.COUNTER)

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
            raise ValueError(f"the unit for a timed metric must be one of {list(_TIME_UNITS)}")
        self.add_metric(name, value, _TIME_UNITS[unit], idx, dimensions, metric_type)

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
        self.add_metric(name, value, _SIZE_UNITS[unit], idx, dimensions, metric_type)

    def add_percent(
        self,
        name: str,
        value: float,
        idx: int | None = None,
        dimensions: Sequence[Dimension] | None = None,
        metric_type: MetricTypes = MetricTypes.GAUGE,
    ) -> None:
        """Record a percentage."""
        self.add_metric(name, value, "Percent", idx, dimensions, metric_type)

    def add_error(self, name: str, value: float, dimensions: Sequence[Dimension] = ()) -> None:
        """Count an error (dimension Level=Error)."""
        dims = [*dimensions, Dimension("Level", "Error")]
        metric = self.add_metric_to_cache(name, "", [d.name for d in dims], MetricTypes.COUNTER)
        metric.add_or_update(value, [d.value for d in dims])
