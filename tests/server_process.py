"""A real `python -m serve` in a subprocess on free ports, and small HTTP helpers for tests.

Self-contained on purpose (no conftest fixtures): a test module builds its archives, then
`with running_server(tmp, store, load_models=[...]) as server:` gives a server that answered
`GET /ready` with 200, and stops it with SIGTERM afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 90.0
_ADDRESS_KEYS = (
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_management_address",
)


def free_port() -> int:
    """A port the OS reports free right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its addresses, process and log file."""

    config: dict[str, Any]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def inference(self) -> str:
        """Base URL of the inference API."""
        return f"http://{self.config['inference_address']}"

    @property
    def management(self) -> str:
        """Base URL of the management API."""
        return f"http://{self.config['management_address']}"

    @property
    def metrics(self) -> str:
        """Base URL of the metrics API."""
        return f"http://{self.config['metrics_address']}"

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_server(
    root: Path, model_store: Path, *, load_models: Sequence[str] = (), **settings: Any
) -> Iterator[ServerProcess]:
    """Start a server on free ports, wait until every model is ready, stop it afterwards."""
    config: dict[str, Any] = {key: f"127.0.0.1:{free_port()}" for key in _ADDRESS_KEYS}
    config.update(model_store=str(model_store), load_models=list(load_models), **settings)
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = root / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--config", str(config_path)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(config, process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    url = f"{server.inference}/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        # waiting on the process doubles as the poll interval and notices an early exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=0.1)
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {server.process.returncode}:\n{server.log()}"
            )
    raise TimeoutError(f"the server was not ready within {READY_TIMEOUT} s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
