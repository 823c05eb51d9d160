"""What every scheduler of a model version does alike: refusing at the door, arming a
request's deadline, the 504 it answers when the deadline passes, the watchdog's period.

The batcher, the step scheduler (generative models) and the sequence batcher (stateful
models) decide differently what runs next; they refuse, time out and word their errors the
same way, so a client sees one server whatever the model's kind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from serve.errors import DeadlineExceeded, ServiceUnavailable, no_worker
from serve.request import InferenceRequest


def label(model: str, version: str) -> str:
    """How errors name a model version."""
    return f'Model "{model}" version {version}'


def check_open(closed: bool, capacity: int, model: str, version: str) -> None:
    """Refuse (503) a request to a version being unregistered or without workers."""
    if closed:
        raise ServiceUnavailable(f"{label(model, version)} is being unregistered")
    if capacity <= 0:
        raise no_worker(model)


def queue_full(model: str, version: str, queue_size: int) -> ServiceUnavailable:
    """The 503 for a full job queue (job_queue_size), retryable."""
    return ServiceUnavailable(
        f"{label(model, version)} has {queue_size} requests queued (job_queue_size); retry "
        "later or scale workers up",
        headers={"Retry-After": "1"},
    )


def arm_deadline(
    loop: asyncio.AbstractEventLoop,
    request: InferenceRequest,
    passed: Callable[[InferenceRequest], None],
) -> None:
    """Call `passed(request)` when the request's deadline (if any) passes."""
    if request.deadline is not None:
        delay = max(0.0, request.deadline.at - time.monotonic())
        request.timer = loop.call_later(delay, passed, request)


def deadline_exceeded(request: InferenceRequest, stage: str, model: str, version: str) -> None:
    """Answer a request 504 because its deadline passed while it was at `stage`."""
    deadline = request.deadline
    assert deadline is not None
    request.fail(
        DeadlineExceeded(
            f"The request deadline of {deadline.describe()} passed while the request was "
            f'{stage} for model "{model}" version {version}'
        )
    )


def watch_period(response_timeout: float) -> float:
    """How often the response-timeout watchdog looks: often enough to act within a quarter
    of the timeout, at most once a second."""
    return min(1.0, response_timeout / 4)
