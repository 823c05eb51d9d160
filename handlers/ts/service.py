"""`ts.service` (its `PredictionException`; TorchServe's `Service` is the worker's own class)."""

from handlers.errors import PredictionException

__all__ = ["PredictionException"]
