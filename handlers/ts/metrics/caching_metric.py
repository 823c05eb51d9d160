"""`ts.metrics.caching_metric`."""

from handlers.metrics import CachingMetric

__all__ = ["CachingMetric"]
