"""Intermediate responses: a handler streams chunks before its final return."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from handlers.context import Context
from handlers.service import make_output


def send_intermediate_predict_response(
    ret: Sequence[Any],
    req_id_map: Mapping[int, str],
    message: str,
    code: int,
    context: Context,
) -> None:
    """Send `ret[idx]` now to each request of the batch; the handler's return ends the stream."""
    if str(os.getenv("LOCAL_RANK", "0")) != "0":
        return
    sender = context.intermediate_sender
    if sender is None:
        raise RuntimeError("send_intermediate_predict_response can only be called inside handle()")
    for idx in req_id_map:
        sender(idx, make_output(context, idx, ret[idx], final=False))
