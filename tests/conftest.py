"""Shared fixtures: one real server (subprocess, free ports) with the test models, and a guard
that fails a test if the server's event loop was blocked while it ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import handlers_src as src
from tests.support import Server, http, model_folder, server_config

T = TypeVar("T")

# The loop may wait for the GIL while executor threads run Python code (5 ms switch interval,
# two cores shared with the test client); anything near this bound means something blocked it.
MAX_LOOP_LAG = 0.25


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async test body."""
    return asyncio.run(coro)


async def poll(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Re-check `condition` (it asks the server) until it holds; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError(f"the server did not reach the expected state in {timeout}s")
        await asyncio.sleep(0.01)


def build_store(store: Path) -> None:
    """The models the shared server loads at start."""
    model_folder(store, "echo", src.ECHO, model_config={"handler": {"greeting": "hi"}})
    model_folder(store, "kinds", src.KINDS)
    model_folder(store, "failing", src.FAILING)
    model_folder(store, "hanging", src.HANGING)
    model_folder(store, "streaming", src.STREAMING)
    model_folder(store, "devices", src.ECHO)
    model_folder(store, "gated", src.GATED, model_config={"jobQueueSize": 2})
    model_folder(store, "gated4", src.GATED, model_config={"batchSize": 4, "maxBatchDelay": 50})


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: model API enabled, the test models loaded."""
    root = tmp_path_factory.mktemp("server")
    store = root / "store"
    store.mkdir()
    build_store(store)
    config = server_config(
        store,
        enable_model_api=True,
        load_models=[
            "echo",
            "kinds",
            "failing",
            "hanging",
            "streaming",
            "devices",
            "gated",
            "gated4",
        ],
        models={
            "echo": {"1.0": {"batch_size": 8, "max_batch_delay": 200}},
            "hanging": {"1.0": {"response_timeout": 2}},
            "devices": {"1.0": {"devices": [0, 1, 2, 3], "min_workers": 1}},
            "streaming": {"1.0": {"batch_size": 1}},
        },
    )
    server = Server(root, config)
    server.start()
    server.wait_ready()
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n{server.log()}"


def metric_samples(server: Server, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family, keyed by sorted labels."""
    status, body = http("GET", server.metrics + "/metrics")
    assert status == 200
    samples: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                samples[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def loop_guard(server: Server) -> Iterator[None]:
    """Fail the test if the server's event loop was blocked longer than MAX_LOOP_LAG."""
    yield
    lag = metric_samples(server, "serve_event_loop_lag_max_seconds")
    worst = max(lag.values(), default=0.0)
    assert worst < MAX_LOOP_LAG, f"the event loop was blocked for {worst:.3f}s"
