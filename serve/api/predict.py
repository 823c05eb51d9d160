"""One prediction through a model version's batcher, shared by the REST and gRPC APIs.

`submit` queues the request (or refuses it at the door), `first_output` waits for its answer,
and `chunks` relays a streaming handler's later chunks in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from handlers.messages import Output
from serve.errors import ServeError
from serve.models.version import ModelVersion
from serve.request import InferenceRequest


async def predict(
    version: ModelVersion, job: InferenceRequest, url_version: str | None, started: float
) -> Output:
    """Queue `job` and wait for its first output; see `first_output`."""
    submit(version, job, url_version)
    return await first_output(version, job, url_version, started)


def submit(version: ModelVersion, job: InferenceRequest, url_version: str | None) -> None:
    """Queue `job` (or refuse it), then copy an unversioned one to its model's shadows."""
    version.batcher.submit(job)
    routing = version.routing
    if url_version is None and routing is not None and routing.split is not None:
        routing.shadow(job, version)


async def first_output(
    version: ModelVersion, job: InferenceRequest, url_version: str | None, started: float
) -> Output:
    """Wait for a queued job's first output (raises its ServeError) and count the request.

    A caller that goes away cancels the job's future, so the batcher drops the request
    before it reaches a handler.
    """
    ok = False
    try:
        output = await job.future
        ok = output.status < 400
        return output
    except asyncio.CancelledError:
        job.future.cancel()
        raise
    finally:
        queued = (job.dispatched - job.arrival) if job.dispatched else 0.0
        version.metrics.answered(url_version, time.monotonic() - started, queued, ok)


async def chunks(job: InferenceRequest, first: Output) -> AsyncIterator[Output]:
    """Every output of a request in order, `first` to the final one.

    A stream that breaks after its first chunk raises the ServeError that ended it.
    """
    yield first
    if first.final:
        return
    stream = job.stream
    assert stream is not None  # created by InferenceRequest.deliver for a non-final output
    while True:
        item = await stream.get()
        if isinstance(item, ServeError):
            raise item
        yield item
        if item.final:
            return
