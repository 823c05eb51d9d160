"""`ts.handler_utils.timer`."""

from handlers.base import timed

__all__ = ["timed"]
