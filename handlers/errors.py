"""Exceptions a handler raises or meets."""

from __future__ import annotations


class PredictionException(Exception):
    """Raised by a handler to answer the whole batch with `error_code` and `message`."""

    def __init__(self, message: str, error_code: int = 500) -> None:
        self.message = message
        self.error_code = error_code
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"


class HandlerLoadError(Exception):
    """The handler could not be imported, found or initialized; the message says why."""
