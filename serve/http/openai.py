"""The OpenAI-compatible door on the inference port: `/v1/models`, `/v1/completions`,
`/v1/chat/completions`, answered whole or streamed as server-sent events.

`model` in a body is a model name (its route decides the version, as on every door) or
`name/version`. Each choice (`n`, and each prompt of a list) is one sequence: one queued
request to the model's generation handler (handlers.text_generation), whose JSON chunks this
door turns into OpenAI's shapes. Errors use OpenAI's body; queue full is 503 with
Retry-After, as on every door.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from handlers.messages import Param
from serve.api.generation import generative_ids, model_entry
from serve.api.infer import Answer, Call, Pending, queue_all
from serve.deadline import TIMEOUT_HEADER
from serve.errors import BadRequest, InternalError, NotFound, ServeError
from serve.http import openai_schema as schema
from serve.http.common import (
    CONFIG,
    ERROR_SHAPES,
    MODEL_VERSION,
    REGISTRY,
    Handler,
    error_headers,
)
from serve.models.version import ModelVersion
from serve.telemetry.tokens import TokenMetrics

logger = logging.getLogger(__name__)

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def routes() -> list[web.RouteDef]:
    """Routes of the OpenAI door (on the inference app, with the inference key)."""
    # GET /v1/models and /v1/models/{name} are KServe v1's paths too: that door answers
    # them with both shapes (serve.api.generation); `name/version` ids are answered here
    return [
        web.get("/v1/models/{model}/{version}", _openai(get_model)),
        web.post("/v1/completions", _openai(completions)),
        web.post("/v1/chat/completions", _openai(chat_completions)),
    ]


def _openai(handler: Handler) -> Handler:
    """Have the guard around `handler` (auth, counting, logging) answer its errors, a 401
    for a missing or wrong key included, in OpenAI's error shape."""
    ERROR_SHAPES[handler] = _error_response
    return handler


def _error_response(error: ServeError) -> web.Response:
    return web.json_response(
        schema.error_body(error), status=error.status, headers=error_headers(error)
    )


async def get_model(request: web.Request) -> web.Response:
    """A generative model version by its `name/version` id."""
    info = request.match_info
    model_id = f"{info['model']}/{info['version']}"
    if model_id not in generative_ids(request.app[REGISTRY]):
        raise NotFound(f"The model `{model_id}` does not exist.")
    return web.json_response(model_entry(model_id))


async def completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/completions`."""
    return await _generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions` (the model's own chat template)."""
    return await _generate(request, chat=True)


def _accept(version: ModelVersion) -> None:
    if not version.generative:
        raise NotFound(
            f"The model `{version.name}` is not a generative model (its handler is "
            f"{version.handler!r}; the OpenAI API serves text_generation models)"
        )


@dataclass(slots=True)
class _Choice:
    """One sequence's progress, for the answer and the token metrics."""

    index: int
    pending: Pending
    text: list[str] = field(default_factory=list)
    finish: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_token_at: float = 0.0


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    registry, config = request.app[REGISTRY], request.app[CONFIG]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    spec = schema.parse(body, chat=chat)
    headers = request.headers
    call = Call(
        model=spec.name,
        version=spec.version,
        routing_key=headers.get(config.routing_header),
        payload=(),
        client_request_id=headers.get("x-request-id"),
        headers=tuple(headers.items()),
        timeout_header=headers.get(TIMEOUT_HEADER),
    )
    payloads = [(Param("body", "application/json", orjson.dumps(b)),) for b in spec.bodies]
    pendings = queue_all(registry, call, payloads, _accept)
    choices = [_Choice(i, p) for i, p in enumerate(pendings)]
    version = pendings[0].route.version
    tokens = version.metrics.generation()
    try:
        answers = [await c.pending.answer() for c in choices]
        for answer in answers:
            _check(answer.first.status, answer.first.body)
        answer_id = ("chatcmpl-" if chat else "cmpl-") + answers[0].request_id
        reply_headers = {"x-request-id": answers[0].request_id, MODEL_VERSION: version.version}
        if spec.stream:
            return await _stream(request, spec, choices, answers, answer_id, reply_headers, tokens)
        await asyncio.gather(
            *(_collect(c, a, tokens, call.started) for c, a in zip(choices, answers, strict=True))
        )
        out = schema.envelope(spec, answer_id, schema.now(), chunk=False)
        out["choices"] = [schema.choice(spec, c.index, "".join(c.text), c.finish) for c in choices]
        out["usage"] = _usage(spec, choices)
        return web.json_response(out, headers=reply_headers)
    except ServeError as error:
        if error.model_version is None:
            error.model_version = version.version
        raise
    finally:
        for c in choices:
            if not c.pending.request.finished:
                c.pending.request.cancel()


def _check(status: int, body: bytes) -> None:
    """A sequence's error chunk (the handler refused it) as a ServeError."""
    if status < 400:
        return
    try:
        message = str(orjson.loads(body).get("error", "the model refused the request"))
    except (orjson.JSONDecodeError, AttributeError):
        message = body.decode("utf-8", "replace") or "the model refused the request"
    error_class = BadRequest if status < 500 else InternalError
    raise error_class(message, status=status)


async def _chunks(
    choice: _Choice, answer: Answer, tokens: TokenMetrics, started: float
) -> AsyncIterator[dict[str, Any]]:
    """A sequence's chunks as the handler wrote them, counted into the token metrics."""
    request = answer.request
    async for output in answer.chunks():
        _check(output.status, output.body)
        chunk = _parsed(output.body)
        now = time.monotonic()
        if chunk.get("token_ids"):
            if not choice.last_token_at:
                tokens.ttft.observe(now - started)
                if request.dispatched:
                    tokens.queue.observe(request.dispatched - request.arrival)
            else:
                tokens.itl.observe(now - choice.last_token_at)
            choice.last_token_at = now
        choice.prompt_tokens = int(chunk.get("prompt_tokens", 0))
        choice.completion_tokens = int(chunk.get("completion_tokens", 0))
        finish = chunk.get("finish_reason")
        if finish is not None:
            choice.finish = finish
            tokens.e2e.observe(now - started)
            tokens.prompt_tokens += choice.prompt_tokens
            tokens.generation_tokens += choice.completion_tokens
            tokens.sequences[finish] = tokens.sequences.get(finish, 0) + 1
        yield chunk
        if output.final:
            return


def _parsed(body: bytes) -> dict[str, Any]:
    """A generation chunk (handlers.generation.stepper.StepOutput.as_json), or a 500 naming
    what the handler sent instead (the stream then ends with an error chunk)."""
    try:
        chunk = orjson.loads(body)
    except orjson.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise InternalError(
            "the model's handler answered a chunk that is not a generation chunk (a JSON "
            f"object with text, token_ids, finish_reason): {body[:60]!r}"
        )
    return chunk


async def _collect(choice: _Choice, answer: Answer, tokens: TokenMetrics, started: float) -> None:
    async for chunk in _chunks(choice, answer, tokens, started):
        choice.text.append(chunk.get("text", ""))


def _usage(spec: schema.GenerationRequest, choices: list[_Choice]) -> dict[str, int]:
    # a prompt counts once however many choices it has (as OpenAI counts it)
    prompt = sum(c.prompt_tokens for c in choices if c.index % spec.n == 0)
    return schema.usage(prompt, sum(c.completion_tokens for c in choices))


async def _stream(
    request: web.Request,
    spec: schema.GenerationRequest,
    choices: list[_Choice],
    answers: list[Answer],
    answer_id: str,
    headers: dict[str, str],
    tokens: TokenMetrics,
) -> web.StreamResponse:
    """Server-sent events: every chunk with the same id and created, `[DONE]` last."""
    response = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
    await response.prepare(request)
    created = schema.now()
    base = schema.envelope(spec, answer_id, created, chunk=True)
    events: asyncio.Queue[tuple[_Choice, dict[str, Any] | ServeError | None]] = asyncio.Queue()

    async def pump(choice: _Choice, answer: Answer) -> None:
        try:
            async for chunk in _chunks(choice, answer, tokens, answer.request.arrival):
                await events.put((choice, chunk))
        except ServeError as error:
            await events.put((choice, error))
            return
        except Exception:  # a bug: end this stream with an error chunk, never leave it hanging
            logger.exception("Request %s: reading choice %d failed", answer_id, choice.index)
            await events.put((choice, InternalError("reading the model's output failed")))
            return
        await events.put((choice, None))

    async def send(payload: dict[str, Any]) -> None:
        await response.write(b"data: " + orjson.dumps(payload) + b"\n\n")

    tasks = [asyncio.create_task(pump(c, a)) for c, a in zip(choices, answers, strict=True)]
    try:
        first = {c.index: True for c in choices}
        open_choices = len(choices)
        while open_choices:
            choice, item = await events.get()
            if item is None:
                open_choices -= 1
                continue
            if isinstance(item, ServeError):
                await send(schema.error_body(item))
                break
            text = item.get("text", "")
            finish = item.get("finish_reason")
            if text or first[choice.index]:
                await send(
                    {
                        **base,
                        "choices": [
                            schema.delta(spec, choice.index, text, None, first=first[choice.index])
                        ],
                    }
                )
                first[choice.index] = False
            if finish is not None:
                await send(
                    {
                        **base,
                        "choices": [schema.delta(spec, choice.index, None, finish, first=False)],
                    }
                )
        else:
            if spec.include_usage:
                await send({**base, "choices": [], "usage": _usage(spec, choices)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        logger.info("Request %s: the client left the stream", answer_id)
        raise
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ServeError):
                await task
    return response
