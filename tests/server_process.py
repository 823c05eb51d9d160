"""`running_server` and small HTTP helpers over the shared server fixture (tests/support.py).

A test module builds its archives, then `with running_server(tmp, store, load_models=[...])
as server:` gives a server that answered `GET /ready` with 200, and stops it with SIGTERM
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import Server, server_config

ServerProcess = Server  # the shared fixture class (tests/support.py)


@contextlib.contextmanager
def running_server(
    root: Path, model_store: Path, *, load_models: Sequence[str] = (), **settings: Any
) -> Iterator[Server]:
    """Start a server on free ports, wait until every model is ready, stop it afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    server = Server(root, server_config(model_store, load_models=list(load_models), **settings))
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status and body (parsed as JSON when it is JSON)."""

    status: int
    body: Any


async def send(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Reply:
    async with session.request(method, url, **kwargs) as response:
        raw = await response.read()
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return Reply(response.status, body)


def request(method: str, url: str, **kwargs: Any) -> Reply:
    """One request with a real aiohttp client."""

    async def run() -> Reply:
        async with aiohttp.ClientSession() as session:
            return await send(session, method, url, **kwargs)

    return asyncio.run(run())


def concurrently(
    url: str, payloads: Sequence[dict[str, Any]], limit: int = 64, method: str = "POST"
) -> list[Reply]:
    """Send one request per payload (aiohttp keyword arguments) at once; replies in order."""

    async def run() -> list[Reply]:
        gate = asyncio.Semaphore(limit)
        async with aiohttp.ClientSession() as session:

            async def one(kwargs: dict[str, Any]) -> Reply:
                async with gate:
                    return await send(session, method, url, **kwargs)

            return await asyncio.gather(*(one(p) for p in payloads))

    return asyncio.run(run())


def counter(server: ServerProcess, name: str, model: str) -> float:
    """A counter's value for one model from the metrics API (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    reply = request("GET", f"{server.metrics}/metrics")
    text = reply.body.decode() if isinstance(reply.body, bytes) else str(reply.body)
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model_name") == model:
                total += sample.value
    return total
