"""The OpenAI wire format: request bodies checked into a `GenerationRequest`, and the JSON
shapes of answers, chunks and errors. Pure functions, no aiohttp, no torch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from serve.errors import BadRequest, ServeError

# choices one call may ask for (n times the prompts): each is one queued sequence, so one
# call cannot take a model's queue and slots by itself
MAX_N = 16

_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found"}  # as OpenAI answers them
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    504: "timeout",
}


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A checked completion or chat request; `bodies` are the handler bodies, one per choice."""

    chat: bool
    model: str  # as the client named it
    name: str
    version: str | None
    bodies: tuple[dict[str, Any], ...]
    n: int
    stream: bool
    include_usage: bool


def parse(body: Any, *, chat: bool) -> GenerationRequest:
    """Check an OpenAI request body (unknown fields are accepted and ignored)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: a model name is required")
    name, _, version = model.partition("/")
    n = _int(body, "n", 1)
    if not 1 <= n <= MAX_N:
        raise BadRequest(f"n must be within [1, {MAX_N}], got {n}")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest("stream_options is only allowed when stream is true")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options must be an object")
    include_usage = bool((options or {}).get("include_usage", False))
    if body.get("logprobs") or body.get("top_logprobs") or body.get("echo"):
        raise BadRequest("logprobs, top_logprobs and echo are not supported")
    params = _sampling(body, chat)
    inputs: list[dict[str, Any]]
    if chat:
        inputs = [{"messages": _messages(body.get("messages"))}]
    else:
        inputs = [{"prompt": p} for p in _prompts(body.get("prompt"))]
    if len(inputs) * n > MAX_N:
        raise BadRequest(
            f"n: at most {MAX_N} choices per call (n times the prompts), got n={n} for "
            f"{len(inputs)} prompts"
        )
    seed = params.pop("seed", None)
    bodies = []
    for one in inputs:
        for i in range(n):
            # a seeded request's choices differ from each other, yet repeat run to run
            choice_seed = None if seed is None else seed + i
            bodies.append({**one, **params, "seed": choice_seed})
    return GenerationRequest(
        chat, model, name, version or None, tuple(bodies), n, stream, include_usage
    )


def _sampling(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    limit_key = (
        "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    )
    max_tokens = body.get(limit_key)
    if max_tokens is not None:
        max_tokens = _int(body, limit_key, 0)
        if max_tokens < 1:
            raise BadRequest(f"{limit_key} must be at least 1, got {max_tokens}")
    elif not chat:
        max_tokens = 16  # OpenAI's default for completions; chat defaults to the context left
    params["max_tokens"] = max_tokens
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise BadRequest(f"{key} must be a number within [{low:g}, {high:g}], got {value!r}")
        if key == "top_p" and value == 0:
            raise BadRequest("top_p must be above 0")
        params[key] = value
    if body.get("top_k") is not None:
        params["top_k"] = max(0, _int(body, "top_k", 0))
    if body.get("seed") is not None:
        params["seed"] = _int(body, "seed", 0)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise BadRequest("stop must be a string or a list of strings")
    params["stop"] = stop or []
    if body.get("ignore_eos"):  # vLLM's extension, for benchmarks that fix output lengths
        params["ignore_eos"] = True
    return params


def _int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer, got {value!r}")
    return value


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise BadRequest(
        "prompt must be a string or a non-empty list of strings (token ids are not supported)"
    )


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise BadRequest(f"messages[{i}].content: only text parts are supported")
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": message["role"], "content": content})
    return out


# --- answers -------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(
    request: GenerationRequest, answer_id: str, created: int, *, chunk: bool
) -> dict[str, Any]:
    """The fields every answer and chunk of one call shares."""
    if request.chat:
        kind = "chat.completion.chunk" if chunk else "chat.completion"
    else:
        kind = "text_completion"
    return {"id": answer_id, "object": kind, "created": created, "model": request.model}


def choice(request: GenerationRequest, index: int, text: str, finish: str | None) -> dict[str, Any]:
    """One choice of a whole answer."""
    if request.chat:
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def delta(
    request: GenerationRequest, index: int, text: str | None, finish: str | None, *, first: bool
) -> dict[str, Any]:
    """One choice of a chunk (the first chat delta names the role)."""
    if request.chat:
        content: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            content["content"] = text
        return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}
    return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}


def error_body(error: ServeError) -> dict[str, Any]:
    """OpenAI's error object for a ServeError."""
    status = error.status
    kind = _ERROR_TYPES.get(status, "internal_error" if status >= 500 else "invalid_request_error")
    code = _ERROR_CODES.get(status)
    return {"error": {"message": error.message, "type": kind, "param": None, "code": code}}


def now() -> int:
    """`created`: seconds since the epoch."""
    return int(time.time())
