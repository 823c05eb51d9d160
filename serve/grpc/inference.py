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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpclib.const
import grpclib.server
import orjson

from handlers.messages import Param
from serve.api.health import healthy
from serve.api.infer import Call, Pending, infer, queue
from serve.deadline import GRPC_SOURCE
from serve.errors import BadRequest, ServeError
from serve.grpc.common import CALL, MODEL_VERSION, CallInfo, metadata_value
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
from serve.request import SEQUENCE_END_HEADER

# Requests of one StreamPredictions2 call queued ahead of the answer being written; past it
# the server stops reading the stream, so a client that does not read cannot pile up work.
STREAM_WINDOW = 64
_SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"
Stream = grpclib.server.Stream[PredictionsRequest, PredictionResponse]


@dataclass(frozen=True, slots=True)
class _Refused:
    """A StreamPredictions2 request refused before it was queued."""

    sequence_id: str | None
    error: ServeError


@dataclass(frozen=True, slots=True)
class _Queued:
    """A StreamPredictions2 request in its model's batcher."""

    sequence_id: str | None
    pending: Pending


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
        answer = await infer(self._registry, self._call(message, CALL.get()))
        body = b"".join([item.body async for item in answer.chunks()])
        await send_unary(stream, prediction_bytes(body), {MODEL_VERSION: answer.version.version})

    async def _stream_predictions(self, stream: Stream) -> None:
        """One message per handler chunk (send_intermediate_predict_response), then the last."""
        message = await stream.recv_message()
        assert message is not None
        answer = await infer(self._registry, self._call(message, CALL.get()))
        async for item in answer.chunks():
            await stream.send_message(PredictionResponse(prediction=item.body))
        await stream.send_trailing_metadata(metadata={MODEL_VERSION: answer.version.version})

    async def _stream_predictions_2(self, stream: Stream) -> None:
        answers = self._answer_in_order(stream.__aiter__(), CALL.get())
        async for response in answers:
            await stream.send_message(response)

    async def _answer_in_order(
        self, messages: AsyncIterator[PredictionsRequest], info: CallInfo
    ) -> AsyncIterator[PredictionResponse]:
        """Every request answered in order; requests are queued as they arrive, so they batch.

        Requests of one call may name different models, so no trailing version is sent.
        """
        answers: asyncio.Queue[_Submitted | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        reader = asyncio.create_task(self._read(messages, answers, window, info))
        try:
            while (item := await answers.get()) is not None:
                async for response in _answers(item):
                    yield response
                window.release()
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled():
                reader.exception()  # the call is over either way; nobody else will read it
            while not answers.empty():
                left = answers.get_nowait()
                if isinstance(left, _Queued):
                    left.pending.request.future.cancel()  # dropped before any handler

    async def _read(
        self,
        messages: AsyncIterator[PredictionsRequest],
        answers: asyncio.Queue[_Submitted | None],
        window: asyncio.Semaphore,
        info: CallInfo,
    ) -> None:
        try:
            async for message in messages:
                await window.acquire()
                answers.put_nowait(self._submit(message, info))
        finally:
            answers.put_nowait(None)

    def _submit(self, message: PredictionsRequest, info: CallInfo) -> _Submitted:
        try:
            # each request of the stream gets an id of its own unless the client named one
            pending = queue(self._registry, self._call(message, info, info.client_id))
        except ServeError as error:
            return _Refused(message.sequence_id, error)
        return _Queued(message.sequence_id, pending)

    def _call(self, message: Any, info: CallInfo, request_id: str | None = None) -> Call:
        """The request as a Call; `message` is a PredictionsRequest, generated or upb's."""
        if not message.model_name:
            raise BadRequest("Parameter model_name is required.")
        name, version = message.model_name, message.model_version or None
        if not message.input:
            self._registry.route(name, version, None)  # an unknown model is still a 404
            raise BadRequest("Parameter input is required.")
        entries = inputs(message)
        params = tuple(Param(name, "", bytearray(value)) for name, value in entries.items())
        return Call(
            model=message.model_name,
            version=version,
            routing_key=metadata_value(info, self._routing_header),
            payload=params,
            client_request_id=info.request_id if request_id is None else request_id,
            headers=info.headers,
            call_timeout=info.timeout(),
            timeout_source=GRPC_SOURCE,
            sequence_id=message.sequence_id or None,
            sequence_end=_says_true(entries.get(SEQUENCE_END_HEADER)),
        )


async def _answers(item: _Submitted) -> AsyncIterator[PredictionResponse]:
    if isinstance(item, _Refused):
        yield _failed(item.sequence_id, item.error)
        return
    # a stateful model's new sequence has the id the server gave it (TorchServe sends none)
    sequence_id = item.pending.request.sequence_id or item.sequence_id
    try:
        answer = await item.pending.answer()
        async for output in answer.chunks():
            yield PredictionResponse(prediction=output.body, sequence_id=sequence_id)
    except ServeError as error:
        yield _failed(sequence_id, error)


def _says_true(value: bytes | None) -> bool:
    """TorchServe's reading of a flag input (Java's Boolean.parseBoolean): "true", any case."""
    return value is not None and value.lower() == b"true"


def _failed(sequence_id: str | None, error: ServeError) -> PredictionResponse:
    return PredictionResponse(sequence_id=sequence_id, status=rpc_status(error))
