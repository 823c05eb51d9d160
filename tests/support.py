"""Running the real server in a subprocess on free ports, and building test model folders."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


_handed_out: set[int] = set()


def free_port() -> int:
    """A port the OS says is free right now, never one this process handed out before.

    The OS may offer a just-released port again, so two calls in a row (one server's five
    addresses) could otherwise get the same port.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A blocking HTTP call, for fixtures and management calls."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Server:
    """A `python -m serve` process and its addresses."""

    root: Path
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    # False: no serve.yaml is written or passed (the test passes --ts-config, say)
    yaml_config: bool = True
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "server.log"

    @property
    def inference(self) -> str:
        return "http://" + self.config["inference_address"]

    @property
    def management(self) -> str:
        return "http://" + self.config["management_address"]

    @property
    def metrics(self) -> str:
        return "http://" + self.config["metrics_address"]

    @property
    def grpc_inference(self) -> str:
        return self.config["grpc_inference_address"]

    @property
    def grpc_management(self) -> str:
        return self.config["grpc_management_address"]

    def start(self, *args: str) -> None:
        path = self.root / "serve.yaml"
        config_args = ["--config", str(path)] if self.yaml_config else []
        if self.yaml_config:
            path.write_text(yaml.safe_dump(self.config))
        env = {**serve_env(), "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serve", *config_args, *args],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = http("GET", self.inference + "/ping", timeout=2)
                if status in (200, 500):
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling an endpoint for readiness, not synchronising on time
        raise RuntimeError(f"server did not answer /ping in {START_TIMEOUT}s:\n{self.log()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until GET /ready says every model version has its workers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http("GET", self.inference + "/ready")
            if status == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"models not ready in {timeout}s: {body!r}\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit on its own (after a signal the test sent)."""
        assert self.process is not None
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def serve_env() -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH: this checkout's code runs,
    whichever checkout the virtualenv has installed."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path}


def run_serve(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m serve ARGS` to its end; its exit code and output (text) are returned."""
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=serve_env(),
    )


def server_config(store: Path, **extra: Any) -> dict[str, Any]:
    """A config on free ports serving `store`; token auth off unless `extra` turns it on."""
    config: dict[str, Any] = {
        "inference_address": f"127.0.0.1:{free_port()}",
        "management_address": f"127.0.0.1:{free_port()}",
        "metrics_address": f"127.0.0.1:{free_port()}",
        "grpc_inference_address": f"127.0.0.1:{free_port()}",
        "grpc_management_address": f"127.0.0.1:{free_port()}",
        "model_store": str(store),
        "disable_token_authorization": True,
    }
    config.update(extra)
    return config


def model_folder(
    store: Path,
    folder: str,
    handler_source: str,
    *,
    name: str | None = None,
    version: str = "1.0",
    handler_file: str = "handler.py",
    model_config: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """A plain-folder archive: MAR-INF/MANIFEST.json, a handler, optional model-config.yaml."""
    root = store / folder
    (root / "MAR-INF").mkdir(parents=True)
    (root / handler_file).write_text(textwrap.dedent(handler_source))
    model: dict[str, Any] = {
        "modelName": name or folder,
        "handler": handler_file,
        "modelVersion": version,
    }
    if model_config is not None:
        (root / "model-config.yaml").write_text(yaml.safe_dump(model_config))
        model["configFile"] = "model-config.yaml"
    for relative, content in (extra_files or {}).items():
        (root / relative).write_text(textwrap.dedent(content))
    manifest = {
        "createdOn": "01/01/2025 00:00:00",
        "runtime": "python",
        "model": model,
        "archiverVersion": "0.12.0",
    }
    (root / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    return root
