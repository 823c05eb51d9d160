"""`ts.handler_utils.micro_batching`."""

from handlers.micro_batching import HANDLER_METHODS, MicroBatching, WorkerThread

__all__ = ["HANDLER_METHODS", "MicroBatching", "WorkerThread"]
