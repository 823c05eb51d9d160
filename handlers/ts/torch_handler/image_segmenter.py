"""`ts.torch_handler.image_segmenter`."""

from handlers.image_segmenter import ImageSegmenter

__all__ = ["ImageSegmenter"]
