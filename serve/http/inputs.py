"""An HTTP request body as handler parameters, exactly as TorchServe's frontend splits it.

- multipart/form-data and application/x-www-form-urlencoded: one parameter per field; file
  parts carry their own content type, plain fields none (so handlers get bytearrays).
- anything else: one parameter named `body` with the request's MIME type.
Bodies over `max_request_size` are refused with 413 before they are read in full.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from handlers.messages import Param
from serve.errors import BadRequest, PayloadTooLarge

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body is larger than max_request_size ({limit} bytes); "
        "raise max_request_size in the server config to accept it"
    )


async def read_params(request: web.Request, limit: int) -> tuple[Param, ...]:
    """The handler parameters of a request (body read here, decoded later in the executor)."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    content_type = request.content_type if "Content-Type" in request.headers else ""
    if content_type == "multipart/form-data":
        return await _multipart(request, limit)
    if content_type == "application/x-www-form-urlencoded":
        return await _urlencoded(request, limit)
    return (Param("body", content_type, await read_body(request, limit)),)


async def read_body(request: web.Request, limit: int) -> bytearray:
    """The whole body as one bytearray (handlers may use it as a writable buffer).

    What has already arrived is taken without waiting (a small body usually has, in full).
    """
    content = request.content
    body = bytearray(content.read_nowait())
    while len(body) <= limit and not content.at_eof():
        body += await content.readany()
    if len(body) > limit:
        raise _too_large(limit)
    return body


async def _multipart(request: web.Request, limit: int) -> tuple[Param, ...]:
    params: list[Param] = []
    total = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BadRequest("Nested multipart bodies are not supported")
            if part.name is None:
                raise BadRequest("A multipart part has no name in its Content-Disposition")
            value = bytearray()
            while chunk := await part.read_chunk():
                value += chunk
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
            content_type = ""
            if part.filename is not None:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                content_type = content_type.split(";", 1)[0].strip()
            params.append(Param(part.name, content_type, value))
    # aiohttp raises HttpProcessingError for a part with malformed headers
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise BadRequest(f"Malformed multipart/form-data body: {exc}") from exc
    if not params:
        raise BadRequest("The multipart/form-data body has no parts")
    return tuple(params)


async def _urlencoded(request: web.Request, limit: int) -> tuple[Param, ...]:
    from urllib.parse import parse_qsl

    body = await read_body(request, limit)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"Malformed application/x-www-form-urlencoded body: {exc}") from exc
    return tuple(Param(name, "", bytearray(value.encode("utf-8"))) for name, value in pairs)
