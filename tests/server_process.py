"""Compatibility re-exports for test files written before tests/helpers/ (use tests.helpers.*)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.helpers.clients import Reply, concurrently, metric, request, send
from tests.helpers.server import Server, serving

ServerProcess = Server

__all__ = ["Reply", "ServerProcess", "concurrently", "counter", "request", "running_server", "send"]


@contextlib.contextmanager
def running_server(
    root: Path, model_store: Path, *, load_models: Sequence[str] = (), **settings: Any
) -> Iterator[Server]:
    """A server on free ports serving `model_store`, ready, stopped and checked afterwards."""
    with serving(root, store=model_store, load=load_models, **settings) as server:
        yield server


def counter(server: Server, name: str, model: str) -> float:
    """A counter's value for one model from the metrics API (0 when absent)."""
    return metric(server, name, model_name=model)
