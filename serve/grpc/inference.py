"""TorchServe's InferenceAPIsService: Ping, Predictions, StreamPredictions, StreamPredictions2.

The same path as REST: resolve the version, one handler parameter per `input` entry, one
InferenceRequest through the batcher. Like TorchServe, inputs carry no content type, so handlers
get bytearrays. Errors end the RPC with their status (serve.grpc.errors), except on
StreamPredictions2, where each request is answered in order and a failed one gets an in-band
`status` so the stream can go on.

Predictions and StreamPredictions are served from the grpclib stream itself (not the generated
wrappers) to read the routing key from the request metadata and to name the version that
answered in the trailing metadata (`x-model-version`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpclib.const
import grpclib.server
import orjson
from grpclib.metadata import Deadline as CallDeadline

from handlers.messages import Param
from serve.api.operations import healthy
from serve.api.predict import chunks, first_output, predict, submit
from serve.deadline import GRPC_SOURCE, Deadline, choose
from serve.errors import BadRequest, ServeError
from serve.grpc.errors import rpc_status
from serve.grpc.fastproto import FastPredictionsRequest, inputs
from serve.grpc.gen.google.protobuf import Empty
from serve.grpc.gen.org.pytorch.serve.grpc.inference import (
    InferenceApIsServiceBase,
    PredictionResponse,
    PredictionsRequest,
    TorchServeHealthResponse,
)
from serve.grpc.transport import prediction_bytes, send_unary
from serve.models.registry import Registry
from serve.models.version import ModelVersion
from serve.request import InferenceRequest, new_request_id

# Requests of one StreamPredictions2 call queued ahead of the answer being written; past it
# the server stops reading the stream, so a client that does not read cannot pile up work.
STREAM_WINDOW = 64
SEQUENCE_HEADER = os.getenv("TS_REQUEST_SEQUENCE_ID", "ts_request_sequence_id")
MODEL_VERSION = "x-model-version"
_SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"
Stream = grpclib.server.Stream[PredictionsRequest, PredictionResponse]
# The client's deadline of the call being handled (grpclib's `stream.deadline`); set per RPC
# by the server's gate (serve.grpc.server), read when a request is made.
CALL_DEADLINE: ContextVar[CallDeadline | None] = ContextVar("call_deadline", default=None)
# Our 504 fires this much before the client's deadline, so that it (not grpclib cancelling the
# handler at the deadline itself) ends the call: counted, and taken out of the queue at once.
DEADLINE_MARGIN = 0.01


@dataclass(frozen=True, slots=True)
class _Queued:
    """A StreamPredictions2 request in its model's batcher."""

    sequence_id: str | None
    version: ModelVersion
    job: InferenceRequest
    url_version: str | None
    started: float


@dataclass(frozen=True, slots=True)
class _Refused:
    """A StreamPredictions2 request refused before it was queued."""

    sequence_id: str | None
    error: ServeError


_Submitted = _Queued | _Refused


class InferenceService(InferenceApIsServiceBase):
    """The inference service over one registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._routing_header = registry.config.routing_header.lower()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        for name, rpc in (
            ("Predictions", self._predictions),
            ("StreamPredictions", self._stream_predictions),
            ("StreamPredictions2", self._stream_predictions_2),
        ):
            mapping[_SERVICE + name] = mapping[_SERVICE + name]._replace(func=rpc)
        for name in ("Predictions", "StreamPredictions"):  # one request: decoded in C
            path = _SERVICE + name
            mapping[path] = mapping[path]._replace(request_type=FastPredictionsRequest)
        return mapping

    def _key(self, stream: Any) -> str | None:
        """The routing key in the call's metadata (ignored for a request naming a version)."""
        key = stream.metadata.get(self._routing_header) if stream.metadata else None
        return key if isinstance(key, str) else None

    async def ping(self, message: Empty) -> TorchServeHealthResponse:
        """TorchServe's health JSON; an unhealthy server still answers OK, as TorchServe's."""
        status = "Healthy" if healthy(self._registry) else "Unhealthy"
        return TorchServeHealthResponse(
            health=orjson.dumps({"status": status}, option=orjson.OPT_INDENT_2).decode()
        )

    async def _predictions(self, stream: Stream) -> None:
        """One answer; a streaming handler's chunks are joined, as REST's chunked body is."""
        message = await stream.recv_message()
        assert message is not None  # grpclib ends a unary call without a message itself
        version, job, started = self._job(message, self._key(stream))
        first = await predict(version, job, message.model_version or None, started)
        body = b"".join([item.body async for item in chunks(job, first)])
        await send_unary(stream, prediction_bytes(body), {MODEL_VERSION: version.version})

    async def _stream_predictions(self, stream: Stream) -> None:
        """One message per handler chunk (send_intermediate_predict_response), then the last."""
        message = await stream.recv_message()
        assert message is not None
        version, job, started = self._job(message, self._key(stream))
        first = await predict(version, job, message.model_version or None, started)
        async for item in chunks(job, first):
            await stream.send_message(PredictionResponse(prediction=item.body))
        await stream.send_trailing_metadata(metadata={MODEL_VERSION: version.version})

    async def _stream_predictions_2(self, stream: Stream) -> None:
        answers = self.stream_predictions_2(stream.__aiter__(), key=self._key(stream))
        async for response in answers:
            await stream.send_message(response)

    async def stream_predictions_2(
        self, messages: AsyncIterator[PredictionsRequest], key: str | None = None
    ) -> AsyncIterator[PredictionResponse]:
        """Every request answered in order; requests are queued as they arrive, so they batch.

        Requests of one call may name different models, so no trailing version is sent.
        """
        queue: asyncio.Queue[_Submitted | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        reader = asyncio.create_task(self._read(messages, queue, window, key))
        try:
            while (item := await queue.get()) is not None:
                async for response in self._answers(item):
                    yield response
                window.release()
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled():
                reader.exception()  # the call is over either way; nobody else will read it
            while not queue.empty():
                left = queue.get_nowait()
                if isinstance(left, _Queued):
                    left.job.future.cancel()  # the batcher drops it before any handler

    async def _read(
        self,
        messages: AsyncIterator[PredictionsRequest],
        queue: asyncio.Queue[_Submitted | None],
        window: asyncio.Semaphore,
        key: str | None,
    ) -> None:
        try:
            async for message in messages:
                await window.acquire()
                queue.put_nowait(self._submit(message, key))
        finally:
            queue.put_nowait(None)

    def _submit(self, message: PredictionsRequest, key: str | None) -> _Submitted:
        try:
            version, job, started = self._job(message, key)
            submit(version, job, message.model_version or None)
        except ServeError as error:
            return _Refused(message.sequence_id, error)
        url_version = message.model_version or None
        return _Queued(message.sequence_id, version, job, url_version, started)

    async def _answers(self, item: _Submitted) -> AsyncIterator[PredictionResponse]:
        if isinstance(item, _Refused):
            yield _failed(item.sequence_id, item.error)
            return
        try:
            first = await first_output(item.version, item.job, item.url_version, item.started)
            async for output in chunks(item.job, first):
                yield PredictionResponse(prediction=output.body, sequence_id=item.sequence_id)
        except ServeError as error:
            yield _failed(item.sequence_id, error)

    def _job(
        self, message: Any, key: str | None = None
    ) -> tuple[ModelVersion, InferenceRequest, float]:
        """The request as a job; `message` is a PredictionsRequest, generated or upb's."""
        if not message.model_name:
            raise BadRequest("Parameter model_name is required.")
        version = self._registry.get(message.model_name, message.model_version or None, key)
        if not message.input:
            raise BadRequest("Parameter input is required.")
        params = tuple(Param(name, "", bytearray(value)) for name, value in inputs(message).items())
        headers: tuple[tuple[str, str], ...] = ()
        if message.sequence_id:
            headers = ((SEQUENCE_HEADER, message.sequence_id),)
        started = time.monotonic()
        deadline = call_deadline(started, self._registry.config.max_request_time)
        loop = asyncio.get_running_loop()
        job = InferenceRequest(new_request_id(), params, headers, loop, deadline=deadline)
        return version, job, started


def call_deadline(started: float, max_request_time: float | None) -> Deadline | None:
    """The deadline of a request made now: the call's (less the margin) or max_request_time."""
    given = CALL_DEADLINE.get()
    client = None if given is None else max(0.0, given.time_remaining() - DEADLINE_MARGIN)
    return choose(started, client, GRPC_SOURCE, max_request_time)


def _failed(sequence_id: str | None, error: ServeError) -> PredictionResponse:
    return PredictionResponse(sequence_id=sequence_id, status=rpc_status(error))
