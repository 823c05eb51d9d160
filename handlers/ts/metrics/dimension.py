"""`ts.metrics.dimension`."""

from handlers.metrics import Dimension

__all__ = ["Dimension"]
