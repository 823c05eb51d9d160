"""The command line and the config file: every error names its key and exits 2, unbound."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.helpers import handlers as src
from tests.helpers.clients import http
from tests.helpers.server import Server, model_folder, run_serve, server_config


def write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_explains_every_flag(tmp_path: Path) -> None:
    result = run_serve("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in (
        "--config",
        "--model-store",
        "--models",
        "--enable-model-api",
        "--disable-token-auth",
        "--ncs",
        "--ts-config",
        "--foreground",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("config", "key", "fragment"),
    [
        (
            {"inference_adress": "127.0.0.1:1"},
            "inference_adress",
            "did you mean 'inference_address'",
        ),
        ({"job_queue_size": 0}, "job_queue_size", "must be at least 1"),
        ({"job_queue_size": "many"}, "job_queue_size", "expected an integer"),
        ({"default_response_timeout": -1}, "default_response_timeout", "greater than 0"),
        ({"enable_model_api": "yes please"}, "enable_model_api", "true or false"),
        ({"inference_address": "localhost"}, "inference_address", "host:port"),
        ({"inference_address": "127.0.0.1:99999"}, "inference_address", "0 to 65535"),
        ({"metrics_address": "https://127.0.0.1:8443"}, "metrics_address", "TLS"),
        (
            {"management_address": "127.0.0.1:5000", "metrics_address": "127.0.0.1:5000"},
            "metrics_address",
            "already used",
        ),
        (
            {"inference_address": "127.0.0.1:5000", "grpc_inference_address": "127.0.0.1:5000"},
            "grpc_inference_address",
            "already used",
        ),
        ({"models": {"m": {"1.0": {"batch_sise": 2}}}}, "models.m.1.0.batch_sise", "did you mean"),
        ({"models": {"m": {"1.0": {"batch_size": 0}}}}, "models.m.1.0.batch_size", "at least 1"),
        (
            {"models": {"m": {"1.0": {"min_workers": 3, "max_workers": 1}}}},
            "models.m.1.0.max_workers",
            "less than min_workers",
        ),
        ({"models": {"m": {"1.0": {"devices": [0, -1]}}}}, "models.m.1.0.devices[1]", "at least 0"),
        ({"models": {"m": {"1.0": {"min_workers": 999}}}}, "models.m.1.0.min_workers", "at most"),
        ({"default_workers_per_model": 257}, "default_workers_per_model", "at most 256"),
        ({"load_models": ["nothere.mar"]}, "load_models[0]", "not in the model store"),
        ({"load_models": ["../x.mar"]}, "load_models[0]", "inside model_store"),
    ],
)
def test_config_errors_name_the_key_and_exit_2_before_binding(
    tmp_path: Path, config: dict[str, object], key: str, fragment: str
) -> None:
    (tmp_path / "store").mkdir()
    port = _bound_port()
    full = {"model_store": "store", "inference_address": f"127.0.0.1:{port}", **config}
    result = run_serve("--config", str(write(tmp_path / "serve.yaml", full)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert fragment in result.stderr
    assert "configuration error" in result.stderr


def test_a_broken_startup_archive_is_a_config_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "broken.mar").write_bytes(b"this is not a zip")
    config = server_config(store, load_models=["broken.mar"])
    result = run_serve("--config", str(write(tmp_path / "serve.yaml", config)), cwd=tmp_path)
    assert result.returncode == 2
    assert "load_models[0]" in result.stderr
    assert "broken.mar" in result.stderr
    # nothing was bound: the port is still free
    host, port = config["inference_address"].split(":")
    with socket.socket() as sock:
        sock.bind((host, int(port)))


def test_unreadable_or_invalid_config_files(tmp_path: Path) -> None:
    result = run_serve("--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read" in result.stderr
    (tmp_path / "bad.yaml").write_text("a: [unclosed")
    result = run_serve("--config", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    store = tmp_path / "elsewhere"
    model_folder(store, "echo", src.ECHO)
    config = server_config(tmp_path / "nonexistent")
    server = Server(tmp_path, config)
    server.start("--model-store", str(store), "--models", "e=echo", "--enable-model-api", "--ncs")
    try:
        server.wait_ready()
        status, _ = http("POST", server.inference + "/predictions/e", b"x")
        assert status == 200
        status, _ = http("DELETE", server.management + "/models/e")
        assert status == 200
    finally:
        assert server.stop() == 0


def _bound_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
