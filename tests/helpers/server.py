"""Running the real server in a subprocess on free ports, building test model folders, and
the `ServerFactory` behind the `make_server` fixtures (start, wait ready, check at teardown)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.clients import http, metric_samples

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
# The loop may wait for the GIL while executor threads run Python code (5 ms switch interval,
# two cores shared with the test client); anything near this bound means something blocked it.
MAX_LOOP_LAG = 0.25
# What a server's log must not show unless the test expects it: an error the server did not
# turn into an answer ("Unhandled error" from a door, a batch that failed outside the handler),
# or any other traceback of the server's own. Tracebacks that a handler-side record introduces
# (`handlers.*`: the handler raised) or a model that failed to load (`serve.workers.pool`), or
# NVML (`serve.workers.devices`) are errors the server reports and answers.
UNHANDLED = ("Unhandled error", ": running a batch failed")
RECORD = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:,.]+ ")  # a log record's first line
ANSWERED = re.compile(r"\] (handlers\.[\w.]+|serve\.workers\.(pool|devices)): ")


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
    def store(self) -> Path:
        """The model store it serves."""
        return Path(self.config["model_store"])

    @property
    def inference(self) -> str:
        return "http://" + str(self.config["inference_address"])

    @property
    def management(self) -> str:
        return "http://" + str(self.config["management_address"])

    @property
    def metrics(self) -> str:
        return "http://" + str(self.config["metrics_address"])

    @property
    def grpc_inference(self) -> str:
        return str(self.config["grpc_inference_address"])

    @property
    def grpc_management(self) -> str:
        return str(self.config["grpc_management_address"])

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


@dataclass(frozen=True)
class HandlerSpec:
    """A model folder for `make_server`: handler source and what `model_folder` takes."""

    source: str
    model_config: dict[str, Any] | None = None
    name: str | None = None
    version: str = "1.0"
    handler_file: str = "handler.py"
    extra_files: dict[str, str] | None = None


def loop_lag(server: Server) -> float:
    """The worst event-loop lag the server measured so far (serve_event_loop_lag_max_seconds)."""
    lag = metric_samples(server, "serve_event_loop_lag_max_seconds")
    return max(lag.values(), default=0.0)


def assert_loop_lag(server: Server) -> None:
    """Fail if the server's event loop was blocked longer than MAX_LOOP_LAG."""
    worst = loop_lag(server)
    assert worst < MAX_LOOP_LAG, f"the event loop was blocked for {worst:.3f}s"


def assert_clean_log(server: Server, expected: Sequence[str] = ()) -> None:
    """Fail if the server's log shows an error it did not turn into an answer, or a traceback
    of its own that no record containing one of `expected` introduces."""
    log = server.log()
    for marker in UNHANDLED:
        assert marker not in log, f"{marker!r} in the server log:\n{log}"
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("Traceback"):
            continue
        # the nearest record line above: a chained exception's second traceback comes after
        # the first one and "The above exception was ...", not right after its record
        record = next((r for r in reversed(lines[:index]) if RECORD.match(r)), "")
        if not ANSWERED.search(record) and not any(text in record for text in expected):
            raise AssertionError(f"a traceback of the server's own after {record!r}:\n{log}")


Expected = bool | Sequence[str]


def finish(server: Server, *, expect_errors: Expected = False, check_lag: bool = True) -> None:
    """Stop a server that a test started and check it: the loop-lag bound while it still runs,
    then exit 0 on SIGTERM, then a log free of unhandled errors: `expect_errors` True skips
    that check, a list of texts allows the tracebacks of records containing one of them."""
    running = server.process is not None and server.process.poll() is None
    try:
        if check_lag and running:
            assert_loop_lag(server)
    finally:
        code = server.stop()
    assert code == 0, f"server exited with {code}:\n{server.log()}"
    if expect_errors is not True:
        assert_clean_log(server, () if expect_errors is False else expect_errors)


class ServerFactory:
    """Builds a model store, starts servers on free ports, waits until they are ready, and at
    `close()` stops and checks every one of them (`finish`). The `make_server` fixtures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._started: list[tuple[Server, Expected]] = []

    def __call__(
        self,
        models: Mapping[str, str | HandlerSpec] | None = None,
        /,
        *,
        load: Sequence[str] | None = None,
        root: Path | None = None,
        store: Path | None = None,
        expect_errors: Expected = False,
        ready: bool = True,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> Server:
        """A started server serving `models` (folder name: handler source or spec).

        `load` names what it loads at start (default: all of `models`); `root` is its working
        folder (default: a fresh one), `store` its model store (default: root/store); `config`
        overrides server_config's keys (serve.yaml's `models:` too: the first argument is
        positional-only); `expect_errors`: what `finish` lets through in the log.
        """
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="server-", dir=self.root))
        if store is None:
            store = root / "store"
            store.mkdir(parents=True, exist_ok=True)
        for folder, spec in (models or {}).items():
            spec = spec if isinstance(spec, HandlerSpec) else HandlerSpec(spec)
            model_folder(
                store,
                folder,
                spec.source,
                name=spec.name,
                version=spec.version,
                handler_file=spec.handler_file,
                model_config=spec.model_config,
                extra_files=spec.extra_files,
            )
        loaded = list(models or {}) if load is None else list(load)
        config.setdefault("load_models", loaded)
        server = Server(root, server_config(store, **config), env=dict(env or {}))
        self._started.append((server, expect_errors))
        server.start(*args)
        if ready:
            server.wait_ready()
        return server

    def close(self) -> None:
        """Stop and check every server this factory started, reporting the first failure."""
        failures: list[BaseException] = []
        for server, expect_errors in self._started:
            if server.process is None:
                continue
            try:
                finish(server, expect_errors=expect_errors)
            except BaseException as error:  # check them all, then fail with the first
                failures.append(error)
        self._started.clear()
        if failures:
            raise failures[0]


@contextlib.contextmanager
def serving(root: Path, **kwargs: Any) -> Iterator[Server]:
    """One server from a `ServerFactory` under `root`, stopped and checked on leaving."""
    root.mkdir(parents=True, exist_ok=True)
    factory = ServerFactory(root)
    try:
        yield factory(**kwargs)
    finally:
        factory.close()
