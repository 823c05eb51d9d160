"""`ts.metrics.metric_type_enum`."""

from handlers.metrics import MetricTypes

__all__ = ["MetricTypes"]
