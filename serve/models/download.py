"""Archives registered from a URL: `allowed_urls`, http(s) downloads and file:// copies.

As in TorchServe, an `http(s)://` or `file://` URL must fully match one of the `allowed_urls`
regexes (case-insensitive), and the archive lands in the model store under the last segment of
the URL's path. A name already in the store is a 409 and the file there is left untouched.
Bytes go to a hidden temporary file in the store, renamed into place only when complete (with
a no-clobber link, so a racing registration cannot overwrite it); any failure removes it.

Downloads use aiohttp with redirects followed by hand, each hop checked against
`allowed_urls`; `max_download_size` caps the bytes and `download_timeout` bounds every wait
(connecting, the response headers, each next chunk). File writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from serve.config import DEFAULT_ALLOWED_URLS, Config
from serve.errors import BadRequest, Conflict, DownloadFailed, PayloadTooLarge
from serve.mar import ARCHIVE_SUFFIXES

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 20  # bytes handed to the writer thread at a time


def url_scheme(url: str) -> str | None:
    """`http`, `https` or `file` for a URL to fetch; None for a name in the model store."""
    found = _SCHEME.match(url)
    if found is None:
        return None
    scheme = found.group(1).lower()
    if scheme not in ("http", "https", "file"):
        raise BadRequest(
            f"Unsupported URL scheme {scheme}:// in url {url}: use http(s):// or file://"
        )
    return scheme


def check_allowed(url: str, allowed: Sequence[str]) -> None:
    """TorchServe's rule: the whole URL matches one of the regexes, ignoring case.

    A path with `.` or `..` segments (even percent-encoded) is refused first: clients resolve
    them, so `https://host/allowed/../other` would match `https://host/allowed/.*` and fetch
    `https://host/other`.
    """
    segments = unquote(urlsplit(url).path).replace("\\", "/").split("/")
    if "." in segments or ".." in segments:
        raise BadRequest(
            f"Relative path is not allowed in url: {url} (its path has '.' or '..' segments)"
        )
    if not any(re.fullmatch(pattern, url, re.IGNORECASE) for pattern in allowed):
        raise BadRequest(
            f"Given URL {url} does not match any allowed URL(s) in allowed_urls "
            f"({', '.join(allowed) or 'none'})"
        )


def warn_if_permissive(config: Config) -> None:
    """Log once at start when the model API is on and allowed_urls is TorchServe's default."""
    if config.enable_model_api and tuple(config.allowed_urls) == DEFAULT_ALLOWED_URLS:
        logger.warning(
            "allowed_urls is the permissive default (%s): anyone who can reach the management "
            "API can make this server download from any http(s) URL or copy any file:// path. "
            "Narrow it, e.g. allowed_urls: ['https://models\\.example\\.com/.*']",
            ", ".join(DEFAULT_ALLOWED_URLS),
        )


def archive_name(url: str, path: str) -> str:
    """The store file name: the last segment of the URL path, checked like a model name."""
    name = unquote(path).rsplit("/", 1)[-1]
    if (
        not _FILE_NAME.fullmatch(name)
        or ".." in name
        or not name.lower().endswith(ARCHIVE_SUFFIXES)
    ):
        raise BadRequest(
            f"Cannot take an archive file name from url {url}: the last path segment must be "
            "a file name of letters, digits, '_', '-' and '.' ending in "
            + ", ".join(ARCHIVE_SUFFIXES)
        )
    return name


async def fetch_archive(url: str, scheme: str, config: Config) -> Path:
    """Download or copy the archive at `url` into the model store; its path there."""
    check_allowed(url, config.allowed_urls)
    store = config.model_store
    if store is None:
        raise BadRequest(f"Cannot register {url}: no model_store is configured to download into")
    parts = urlsplit(url)
    name = archive_name(url, parts.path)
    target = store / name
    if await asyncio.to_thread(os.path.lexists, target):
        raise _exists(name)
    partial = store / f".{name}.{uuid.uuid4().hex}.part"
    try:
        if scheme == "file":
            await asyncio.to_thread(_copy, url, parts.netloc, parts.path, partial, config)
        else:
            await _download(url, partial, config)
        await asyncio.to_thread(_publish, partial, target)
    except BaseException:
        await asyncio.to_thread(_remove, partial)
        raise
    logger.info("Saved the archive from %s as %s", url, target)
    return target


def remove_download(path: Path) -> None:
    """Delete an archive this module saved (blocking: call it in a worker thread)."""
    _remove(path)


def _exists(name: str) -> Conflict:
    return Conflict(f"Model file already exists {name} in the model store")


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _publish(partial: Path, target: Path) -> None:
    try:
        os.link(partial, target)  # fails if the name exists: never overwrite an archive
    except FileExistsError:
        raise _exists(target.name) from None
    finally:
        _remove(partial)


def _copy(url: str, host: str, path: str, partial: Path, config: Config) -> None:
    if host not in ("", "localhost"):
        raise BadRequest(f"file:// URL {url} names host {host!r}: use file:///absolute/path")
    source = Path(unquote(path))
    if not source.is_absolute() or not source.is_file():
        raise DownloadFailed(f"Failed to download archive from: {url}: no such file")
    size = source.stat().st_size
    if size > config.max_download_size:
        raise _too_large(url, config.max_download_size)
    shutil.copyfile(source, partial)


def _too_large(url: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The archive at {url} is larger than max_download_size ({limit} bytes); "
        "raise max_download_size in the server config to accept it"
    )


async def _download(url: str, partial: Path, config: Config) -> None:
    wait = config.download_timeout
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=wait, sock_read=wait)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            response = await _follow(session, url, config.allowed_urls)
            async with response:
                await _save(url, response, partial, config.max_download_size)
    except TimeoutError as exc:
        raise DownloadFailed(
            f"Failed to download archive from: {url}: no data for {wait:g} s (download_timeout)"
        ) from exc
    except aiohttp.ClientError as exc:
        raise DownloadFailed(f"Failed to download archive from: {url}: {exc}") from exc


async def _follow(
    session: aiohttp.ClientSession, url: str, allowed: Sequence[str]
) -> aiohttp.ClientResponse:
    """GET `url`, following up to MAX_REDIRECTS redirects that also match allowed_urls."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = await session.get(current, allow_redirects=False)
        if response.status not in _REDIRECTS:
            if response.status != 200:
                response.release()
                raise DownloadFailed(
                    f"Failed to download archive from: {url}: {current} answered HTTP "
                    f"{response.status} {response.reason or ''}".rstrip()
                )
            return response
        location = response.headers.get("Location", "")
        response.release()
        if not location:
            raise DownloadFailed(
                f"Failed to download archive from: {url}: {current} redirected without a Location"
            )
        following = urljoin(current, location)
        if url_scheme(following) not in ("http", "https"):
            raise BadRequest(f"Refusing the redirect from {current} to {following}: not http(s)")
        try:
            check_allowed(following, allowed)
        except BadRequest as exc:
            raise BadRequest(f"Refusing the redirect from {current}: {exc.message}") from None
        current = following
    raise DownloadFailed(
        f"Failed to download archive from: {url}: more than {MAX_REDIRECTS} redirects"
    )


async def _save(url: str, response: aiohttp.ClientResponse, partial: Path, limit: int) -> None:
    if response.content_length is not None and response.content_length > limit:
        raise _too_large(url, limit)
    file: BinaryIO = await asyncio.to_thread(partial.open, "xb")
    try:
        received = 0
        buffer = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise _too_large(url, limit)
            buffer += chunk
            if len(buffer) >= _CHUNK:
                await asyncio.to_thread(file.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(file.write, bytes(buffer))
    finally:
        await asyncio.to_thread(file.close)
