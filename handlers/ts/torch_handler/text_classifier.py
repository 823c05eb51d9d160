"""`ts.torch_handler.text_classifier`."""

from handlers.text_classifier import TextClassifier

__all__ = ["TextClassifier"]
