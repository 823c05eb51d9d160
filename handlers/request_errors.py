"""A BaseHandler whose undecodable inputs fail only their own request.

`preprocess` calls `reject(idx, reason)` for a request it cannot use and leaves it out of the
batch; the others run through the model in one forward pass. `handle` then puts a 400 answer
(`{"code", "type", "message"}`, the message naming the request) at each rejected index, with
`context.set_response_status(400, ..., idx)`, so batch-mates are answered normally.
"""

from __future__ import annotations

import time
from typing import Any

from handlers.base import BaseHandler
from handlers.context import Context


class InputError(ValueError):
    """One request's input cannot be used; the message says why."""


class PerRequestHandler(BaseHandler):
    """BaseHandler.handle with per-request input errors."""

    def __init__(self) -> None:
        super().__init__()
        self.request_errors: dict[int, str] = {}

    def reject(self, idx: int, reason: str) -> None:
        """Answer the idx-th request of the batch with a 400 instead of a prediction."""
        self.request_errors[idx] = reason

    def handle(self, data: list[dict[str, Any]], context: Context) -> Any:
        """preprocess → inference → postprocess on the accepted requests; 400s for the rest."""
        start = time.time()
        self.context = context
        self.request_errors = {}
        if self._is_describe():
            return [self.describe_handle()]
        preprocessed = self.preprocess(data)
        if len(self.request_errors) >= len(data):
            outputs: list[Any] = []
        elif self._is_explain():
            outputs = self.explain_handle(preprocessed, data)
        else:
            outputs = self.postprocess(self.inference(preprocessed))
        results = merge_request_errors(outputs, len(data), self.request_errors, context)
        if context.metrics is not None:
            context.metrics.add_time(
                "HandlerTime", round((time.time() - start) * 1000, 2), None, "ms"
            )
        return results


def input_of(row: Any) -> Any:
    """A request's payload: its `data` parameter, else its `body` (TorchServe's lookup)."""
    if not isinstance(row, dict):
        return None
    value = row.get("data")
    return value if value is not None else row.get("body")


def merge_request_errors(
    outputs: list[Any], size: int, errors: dict[int, str], context: Context
) -> list[Any]:
    """Interleave the accepted requests' outputs with error answers for the rejected ones."""
    if not errors:
        return outputs
    if len(outputs) != size - len(errors):
        raise RuntimeError(
            f"postprocess returned {len(outputs)} results for {size - len(errors)} accepted inputs"
        )
    accepted = iter(outputs)
    results: list[Any] = []
    for idx in range(size):
        reason = errors.get(idx)
        if reason is None:
            results.append(next(accepted))
            continue
        request_id = context.get_request_id(idx)
        message = f"Bad input in request {idx} of the batch (request id {request_id}): {reason}"
        context.set_response_status(400, "Bad Request", idx)
        results.append({"code": 400, "type": "BadRequestException", "message": message})
    return results
