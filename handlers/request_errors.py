"""A BaseHandler whose undecodable inputs fail only their own request.

`preprocess` calls `reject(idx, reason)` for a request it cannot use and leaves it out of the
batch; the others run through the model in one forward pass. `handle` then puts a 400 answer
(`{"code", "type", "message"}`) at each rejected index, with
`context.set_response_status(400, ..., idx)`, so batch-mates are answered normally. The message
names the request only when the batch holds several (its index and id), and the item only
when the request holds several (KServe v1 instances, OIP inputs).
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


IMAGE_HINT = (
    "send the image as the request body (curl -T file.png URL) or as the form field data "
    '(curl -F data=@file.png URL); over KServe v1 as {"instances": [{"data": "<base64>"}]}, '
    'over OIP v2 as a BYTES input whose data is ["<base64>"]'
)
TEXT_HINT = (
    "send the text as the request body (curl -T file.txt URL) or as the form field data "
    '(curl -F data=@file.txt URL); over KServe v1 as {"instances": [{"data": "<text>"}]}'
)


def require_input(row: Any, hint: str, context: Context | None, idx: int) -> Any:
    """Request idx's payload (see input_of), or an InputError saying what arrived and `hint`."""
    value = input_of(row)
    if value is not None:
        return value
    if isinstance(row, dict) and row:
        has_batch = context is not None and context.request_processor is not None
        headers = context.get_all_request_header(idx) if context and has_batch else {}
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        kind = f" ({str(content_type).split(';')[0].strip()})" if content_type else ""
        fields = ", ".join(repr(str(k)) for k in row)
        arrived = f"the request{kind} has the field(s) {fields}"
    elif isinstance(row, dict):
        arrived = "the request is empty"
    else:
        arrived = f"the input is a {type(row).__name__}, not an object with 'data'"
    raise InputError(f"no 'data' or 'body' input: {arrived}; {hint}")


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
    ids = [context.get_request_id(idx) for idx in range(size)]
    for idx in range(size):
        reason = errors.get(idx)
        if reason is None:
            results.append(next(accepted))
            continue
        message = f"Bad input{_where(idx, ids)}: {reason}"
        context.set_response_status(400, "Bad Request", idx)
        results.append({"code": 400, "type": "BadRequestException", "message": message})
    return results


def _where(idx: int, ids: list[str | None]) -> str:
    """Which request (when the batch holds several) and item (when the request holds several)."""
    own = [i for i, rid in enumerate(ids) if rid == ids[idx]]
    item = f" (item {own.index(idx)} of {len(own)})" if len(own) > 1 else ""
    if len(set(ids)) == 1:
        return item
    return f" in request {idx} of the batch (request id {ids[idx]}){item}"
