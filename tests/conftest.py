"""Shared fixtures: the `make_server` factories (every server they start is stopped and checked
at teardown: exit 0, a clean log, the loop-lag bound), one shared server with the test models,
and a per-test loop guard on it. Helpers live in tests/helpers/, not here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import handlers as src
from tests.helpers.clients import metric_samples, poll, run
from tests.helpers.server import (
    MAX_LOOP_LAG,
    HandlerSpec,
    Server,
    ServerFactory,
    assert_loop_lag,
)

# Compatibility re-exports for test files that still import them from here (use tests.helpers).
__all__ = ["MAX_LOOP_LAG", "metric_samples", "poll", "run"]

# The shared server's models: folder name -> handler.
SHARED_MODELS: dict[str, str | HandlerSpec] = {
    "echo": HandlerSpec(src.ECHO, model_config={"handler": {"greeting": "hi"}}),
    "kinds": src.KINDS,
    "failing": src.FAILING,
    "hanging": src.HANGING,
    "streaming": src.STREAMING,
    "devices": src.ECHO,
    "gated": HandlerSpec(src.GATED, model_config={"jobQueueSize": 2}),
    "gated4": HandlerSpec(src.GATED, model_config={"batchSize": 4, "maxBatchDelay": 50}),
}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """A factory of servers for one test (aiohttp's make_runner style); each one is stopped
    and checked when the test ends."""
    factory = ServerFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """`make_server` for module-scoped server fixtures: checked when the module ends."""
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server: model API enabled, the test models loaded."""
    factory = ServerFactory(tmp_path_factory.mktemp("shared"))
    yield factory(
        SHARED_MODELS,
        enable_model_api=True,
        models={
            "echo": {"1.0": {"batch_size": 8, "max_batch_delay": 200}},
            "hanging": {"1.0": {"response_timeout": 2}},
            "devices": {"1.0": {"devices": [0, 1, 2, 3], "min_workers": 1}},
            "streaming": {"1.0": {"batch_size": 1}},
        },
    )
    factory.close()


@pytest.fixture
def loop_guard(server: Server) -> Iterator[None]:
    """Fail the test if the shared server's event loop was blocked longer than MAX_LOOP_LAG."""
    yield
    assert_loop_lag(server)
