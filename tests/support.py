"""Compatibility re-exports for test files written before tests/helpers/ (use tests.helpers.*)."""

from tests.helpers.clients import http
from tests.helpers.server import (
    REPO,
    START_TIMEOUT,
    Server,
    free_port,
    model_folder,
    run_serve,
    serve_env,
    server_config,
)

__all__ = [
    "REPO",
    "START_TIMEOUT",
    "Server",
    "free_port",
    "http",
    "model_folder",
    "run_serve",
    "serve_env",
    "server_config",
]
