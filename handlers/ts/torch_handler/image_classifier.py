"""`ts.torch_handler.image_classifier`."""

from handlers.image_classifier import ImageClassifier

__all__ = ["ImageClassifier"]
