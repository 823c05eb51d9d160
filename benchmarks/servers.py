"""The servers under test: ours, TorchServe 0.12, LitServe, and the bare aiohttp floor.

Each runs as a child process in its own session and temp folder, on free ports from the OS,
and is driven over HTTP only (the management API to register and scale, like a user would).
`measured_pids` names the processes whose CPU and memory count: our one process; TorchServe's
Java frontend and its Python workers (not the `torchserve` launcher that waits on them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import procfs
from benchmarks.loadgen import wait_http

ROOT = Path(__file__).resolve().parent.parent
TORCHSERVE_VENV = ROOT / "benchmarks" / ".venv-torchserve"
LITSERVE_VENV = ROOT / "benchmarks" / ".venv-litserve"
START_TIMEOUT = 180.0


def free_port() -> int:
    """A port the OS says is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(method: str, url: str, timeout: float = 300.0) -> tuple[int, Any]:
    """A management call; (status, parsed JSON body or text)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class Server:
    """A server process under test."""

    name = "server"
    label = "server"

    def __init__(self, store: Path) -> None:
        self.store = store
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.port = free_port()
        self.management_port = free_port()
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def predictions_url(self, model: str) -> str:
        return f"{self.base}/predictions/{model}"

    def route_url(self, route: str, model: str) -> str:
        """A payload's route (e.g. `/predictions/{model}`) on this server."""
        return self.base + route.format(model=model)

    @classmethod
    def accepts(cls, content_type: str) -> bool:
        """Whether this server can take a payload of this content type."""
        return True

    def target(self, model: str, transport: str) -> str:
        """Where the load goes: the predictions URL, or the gRPC inference address."""
        if transport == "grpc":
            return f"grpc://127.0.0.1:{self.grpc_port}"
        return self.predictions_url(model)

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, preload: str | None = None) -> None:
        """Start the process; return once /ping answers (with `preload` loaded at start)."""
        self.launch(preload)
        try:
            wait_http(f"{self.base}/ping", START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"{self.label} did not start; see {self.workdir}/server.log"
            ) from None

    def launch(self, preload: str | None = None) -> None:
        """Start the process and return at once; `started_at` is when (time.monotonic())."""
        command, env = self.command(preload)
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            command, cwd=self.workdir, env=env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()

    def measured_pids(self) -> list[int]:
        """The processes whose CPU and memory are the server's."""
        assert self.process is not None
        return procfs.tree(self.process.pid)

    def stop(self) -> None:
        """SIGTERM the whole session, then SIGKILL what is left after a grace period."""
        process = self.process
        if process is None:
            return
        self.process = None
        pids = procfs.tree(process.pid)
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            if all(procfs.wait_gone(p, grace) for p in pids):
                break

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the management API (TorchServe's, which ours keeps) ------------------------------

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def register(self, model: str, *, batch_size: int, max_batch_delay: int, workers: int) -> None:
        query = urllib.parse.urlencode(
            {
                "url": f"{model}.mar",
                "batch_size": batch_size,
                "max_batch_delay": max_batch_delay,
                "initial_workers": workers,
                "synchronous": "true",
            }
        )
        status, body = http("POST", f"{self.management}/models?{query}")
        if status != 200:
            raise RuntimeError(f"{self.label}: registering {model} failed: {status} {body}")

    def scale(self, model: str, workers: int) -> None:
        query = urllib.parse.urlencode(
            {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        )
        status, body = http("PUT", f"{self.management}/models/{model}?{query}")
        if status not in (200, 202):
            raise RuntimeError(f"{self.label}: scaling {model} failed: {status} {body}")

    def unregister(self, model: str) -> None:
        # TorchServe 0.12 sometimes answers 500 ConcurrentModificationException while its
        # workers are still winding down after a run; the same call a moment later succeeds
        for attempt in range(5):
            status, body = http("DELETE", f"{self.management}/models/{model}")
            if status == 200:
                return
            if status != 500 or attempt == 4:
                break
            time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"{self.label}: unregistering {model} failed: {status} {body}")


class Ours(Server):
    """`python -m serve --config <yaml>` from this repository; `extra` lines join the YAML."""

    name = "ours"
    label = "ours"
    extra: tuple[str, ...] = ()

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        lines = [
            f"inference_address: 127.0.0.1:{self.port}",
            f"management_address: 127.0.0.1:{self.management_port}",
            f"metrics_address: 127.0.0.1:{self.metrics_port}",
            f"grpc_inference_address: 127.0.0.1:{self.grpc_port}",
            f"grpc_management_address: 127.0.0.1:{free_port()}",
            f"model_store: {self.store}",
            "enable_model_api: true",
            "disable_token_authorization: true",
            "default_workers_per_model: 1",
        ]
        if preload:
            lines.append(f"load_models: [{preload}={preload}.mar]")
        lines.extend(self.extra)
        config = self.workdir / "serve.yaml"
        config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "PYTHONPATH": _with_root(os.environ.get("PYTHONPATH"))}
        return [sys.executable, "-m", "serve", "--config", str(config)], env


class TorchServe(Server):
    """Real TorchServe 0.12.0 from its own venv (`make bench-setup`)."""

    name = "torchserve"
    label = "TorchServe"

    @staticmethod
    def available() -> bool:
        launcher = TORCHSERVE_VENV / "bin" / "torchserve"
        return launcher.exists() and shutil.which("java") is not None

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        config = self.workdir / "config.properties"
        config.write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.port}",
                    f"management_address=http://127.0.0.1:{self.management_port}",
                    f"metrics_address=http://127.0.0.1:{free_port()}",
                    f"grpc_inference_port={self.grpc_port}",
                    f"grpc_management_port={free_port()}",
                    f"model_store={self.store}",
                    "default_workers_per_model=1",
                    "disable_token_authorization=true",
                    "enable_model_api=true",
                ]
            )
            + "\n"
        )
        bin_dir = TORCHSERVE_VENV / "bin"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            TMPDIR=str(tmp),  # its pid file and sockets: private to this run
            TEMP=str(tmp),
        )
        command = [
            str(bin_dir / "torchserve"), "--start", "--foreground",
            "--ts-config", str(config), "--model-store", str(self.store),
            "--disable-token-auth", "--enable-model-api", "--ncs",
        ]  # fmt: skip
        if preload:
            command += ["--models", f"{preload}={preload}.mar"]
        return command, env

    def measured_pids(self) -> list[int]:
        assert self.process is not None
        pids = procfs.tree(self.process.pid)
        java = [p for p in pids if "org.pytorch.serve.ModelServer" in procfs.command(p)]
        return procfs.tree(java[0]) if java else pids


class Floor(Server):
    """The bare aiohttp server: the HTTP floor of this machine."""

    name = "floor"
    label = "aiohttp floor"

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONPATH": _with_root(os.environ.get("PYTHONPATH"))}
        return [sys.executable, "-m", "benchmarks.floor", "--port", str(self.port)], env

    def register(self, model: str, *, batch_size: int, max_batch_delay: int, workers: int) -> None:
        return None

    def scale(self, model: str, workers: int) -> None:
        return None

    def unregister(self, model: str) -> None:
        return None


class LitServe(Server):
    """LitServe from its own venv (`make bench-setup`), one model per process.

    LitServe has no management API: the model and its batching are fixed at start, so
    registering (or scaling) starts a new process with them (benchmarks/litserve_app.py).
    Only JSON payloads: LitServe reads request bodies as JSON.
    """

    name = "litserve"
    label = "LitServe"

    def __init__(self, store: Path) -> None:
        super().__init__(store)
        self._settings: tuple[str, int, int, int] | None = None  # model, batch, delay, workers

    @staticmethod
    def available() -> bool:
        return (LITSERVE_VENV / "bin" / "python").exists()

    def predictions_url(self, model: str) -> str:
        return f"{self.base}/predict"

    def route_url(self, route: str, model: str) -> str:
        return self.predictions_url(model)

    @classmethod
    def accepts(cls, content_type: str) -> bool:
        return content_type == "application/json"

    def command(self, preload: str | None) -> tuple[list[str], dict[str, str]]:
        model, batch, delay, workers = self._settings or (preload or "", 1, 0, 1)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return [
            str(LITSERVE_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "litserve_app.py"),
            "--archive", str(self.store / f"{model}.mar"), "--port", str(self.port),
            "--batch-size", str(batch), "--batch-delay-ms", str(delay),
            "--workers", str(workers),
        ], env  # fmt: skip

    def start(self, preload: str | None = None) -> None:
        """Nothing runs until a model is registered (or `preload` names one)."""
        if preload is not None:
            self._restart()

    def _restart(self) -> None:
        self.stop()
        self.launch()
        try:
            wait_http(f"{self.base}/health", START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"LitServe did not start; see {self.workdir}/server.log") from None

    def measured_pids(self) -> list[int]:
        return procfs.tree(self.process.pid) if self.process is not None else []

    def register(self, model: str, *, batch_size: int, max_batch_delay: int, workers: int) -> None:
        self._settings = (model, batch_size, max_batch_delay, workers)
        self._restart()

    def scale(self, model: str, workers: int) -> None:
        assert self._settings is not None
        self._settings = (*self._settings[:3], workers)
        self._restart()

    def unregister(self, model: str) -> None:
        self.stop()


def _with_root(current: str | None) -> str:
    return f"{ROOT}{os.pathsep}{current}" if current else str(ROOT)


SERVERS: dict[str, type[Server]] = {
    "ours": Ours,
    "torchserve": TorchServe,
    "floor": Floor,
    "litserve": LitServe,
}
