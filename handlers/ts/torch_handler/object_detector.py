"""`ts.torch_handler.object_detector`."""

from handlers.object_detector import ObjectDetector

__all__ = ["ObjectDetector"]
