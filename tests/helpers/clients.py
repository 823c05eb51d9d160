"""Client-side helpers: real HTTP calls (urllib and aiohttp), metrics and keys read back from a
server, and polling an endpoint until a condition holds."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.helpers.server import Server

T = TypeVar("T")

Labels = tuple[tuple[str, str], ...]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async test body."""
    return asyncio.run(coro)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A blocking HTTP call: (status, raw body), whatever the status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def parse(raw: bytes) -> Any:
    """A body as JSON when it is JSON, else the raw bytes; None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def call_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A blocking HTTP call: (status, body parsed as JSON, or bytes when not JSON).

    A body that is not bytes is sent as JSON with its content type.
    """
    sent = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    status, raw = http(method, url, body, timeout=timeout, headers=sent)
    return status, parse(raw)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status and body (parsed as JSON when it is JSON)."""

    status: int
    body: Any


async def send(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Reply:
    """One request on an aiohttp session (aiohttp keyword arguments)."""
    async with session.request(method, url, **kwargs) as response:
        raw = await response.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return Reply(response.status, body)


def request(method: str, url: str, **kwargs: Any) -> Reply:
    """One request with a real aiohttp client."""

    async def one() -> Reply:
        async with aiohttp.ClientSession() as session:
            return await send(session, method, url, **kwargs)

    return asyncio.run(one())


def concurrently(
    url: str, payloads: Sequence[dict[str, Any]], limit: int = 64, method: str = "POST"
) -> list[Reply]:
    """Send one request per payload (aiohttp keyword arguments) at once; replies in order."""

    async def all_of_them() -> list[Reply]:
        gate = asyncio.Semaphore(limit)
        async with aiohttp.ClientSession() as session:

            async def one(kwargs: dict[str, Any]) -> Reply:
                async with gate:
                    return await send(session, method, url, **kwargs)

            return await asyncio.gather(*(one(p) for p in payloads))

    return asyncio.run(all_of_them())


def metric_samples(server: Server, name: str) -> dict[Labels, float]:
    """The samples of one metric from the metrics API, keyed by sorted labels."""
    status, body = http("GET", server.metrics + "/metrics")
    assert status == 200, (status, body)
    samples: dict[Labels, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                samples[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(value for key, value in metric_samples(server, name).items() if wanted <= set(key))


def keys(server: Server) -> dict[str, str]:
    """The current token-auth keys, as a user reads them from the server's key_file.json."""
    data = json.loads((server.root / "key_file.json").read_text())
    return {kind: data[kind]["key"] for kind in ("management", "inference", "API")}


async def poll(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Re-check `condition` (it asks the server) until it holds; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError(f"the server did not reach the expected state in {timeout}s")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """`poll` for synchronous code: re-check `condition` (it asks the server or reads its log)
    until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not reach the expected state in {timeout}s")
        time.sleep(0.02)
