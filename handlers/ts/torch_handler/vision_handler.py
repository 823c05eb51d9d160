"""`ts.torch_handler.vision_handler`."""

from handlers.vision import VisionHandler

__all__ = ["VisionHandler"]
