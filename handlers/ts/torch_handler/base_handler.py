"""`ts.torch_handler.base_handler`."""

from handlers.base import BaseHandler

__all__ = ["BaseHandler"]
