"""`ts.handler_utils`."""

from handlers.micro_batching import MicroBatching

__all__ = ["MicroBatching"]
