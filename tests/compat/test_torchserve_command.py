"""The `torchserve` command (serve.torchserve_cli) and TorchServe's log files, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from serve.__main__ import split_models
from serve.grpc.gen.org.pytorch.serve.grpc.management import (
    ManagementApIsServiceStub,
    RegisterModelRequest,
)
from tests.config.test_tsconfig import addresses, properties
from tests.helpers.clients import http
from tests.helpers.server import serve_env

ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"
HANDLER = """\
import logging

logger = logging.getLogger(__name__)


def handle(data, context):
    if data:
        logger.info("echo handler got %d", len(data))
        context.metrics.add_time("EchoTime", 1.5)
    return ["ok"] * len(data) if data else None
"""
RUNNING = "TorchServe is already running, please use torchserve --stop to stop TorchServe."


class Workdir:
    """A working folder with a model store, a config.properties on free ports, its own TMPDIR
    (so the pid file is this test's); each run writes its output to a file of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "model_store"
        self.store.mkdir()
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.ports = addresses()
        # TorchServe's default metrics_mode: its metric log lines go to ts_metrics.log and
        # model_metrics.log (ours is prometheus, which writes no metric lines)
        (root / "config.properties").write_text(properties(self.ports, "metrics_mode=log\n"))
        self.out = root / "command-0.out"
        self._runs = 0
        self.env = {**serve_env(), "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        for name in ("LOG_LOCATION", "METRICS_LOCATION", "TS_CONFIG_FILE"):
            self.env.pop(name, None)

    @property
    def inference(self) -> str:
        return "http://" + self.ports["inference_address"]

    @property
    def management(self) -> str:
        return "http://" + self.ports["management_address"]

    @property
    def pid_file(self) -> Path:
        return self.tmp / ".model_server.pid"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "serve.torchserve_cli", *args]

    def run(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        """Run the command to its end. Its output goes to a file, not a pipe: a started server
        keeps the command's stdout, so a pipe would not close when the command returns, and it
        goes on writing to that file."""
        self._runs += 1
        self.out = self.root / f"command-{self._runs}.out"
        with self.out.open("w") as out:
            code = subprocess.run(
                self.command(*args),
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        return code, self.out.read_text()

    def log(self, name: str) -> str:
        path = self.root / "logs" / name
        return path.read_text() if path.exists() else ""


def build_archive(root: Path, store: Path) -> None:
    """echo.mar, built by TorchServe's own torch-model-archiver."""
    (root / "echo_handler.py").write_text(HANDLER)
    subprocess.run(
        [
            str(ARCHIVER),
            "--model-name",
            "echo",
            "--version",
            "1.0",
            "--handler",
            str(root / "echo_handler.py"),
            "--export-path",
            str(store),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Workdir]:
    work = Workdir(tmp_path)
    build_archive(tmp_path, work.store)
    yield work
    if work.pid_file.exists():  # a failed test: stop what it started
        work.run("--stop")


def test_split_models_takes_commas_and_spaces() -> None:
    assert split_models(["a.mar,b=b.mar", "c.mar", " d.mar , ", "all"]) == [
        "a.mar",
        "b=b.mar",
        "c.mar",
        "d.mar",
        "all",
    ]


def test_start_serves_refuses_a_second_start_and_stop_stops(work: Workdir) -> None:
    (work.root / "log4j2.xml").write_text("<Configuration/>")
    code, out = work.run(
        "--start",
        "--ncs",
        "--disable-token-auth",
        "--enable-model-api",
        "--ts-config",
        "config.properties",
        "--model-store",
        str(work.store),
        "--models",
        "echo.mar,second=echo.mar",
        "--log-config",
        "log4j2.xml",
        "--plugins-path",
        "plugins",
    )
    assert code == 0, out
    # returned once bound: the APIs answer now, without polling
    assert http("GET", work.inference + "/ping")[0] == 200
    assert "Model server started." in out
    for flag in ("--log-config", "--plugins-path"):
        assert f"torchserve: warning: {flag} is accepted and ignored" in out
    pid = int(work.pid_file.read_text())
    os.kill(pid, 0)  # the recorded process is alive

    status, body = http("GET", work.management + "/models")
    assert status == 200, body
    assert sorted(m["modelName"] for m in json.loads(body)["models"]) == ["echo", "second"]
    _wait_ready(work)
    status, body = http("POST", work.inference + "/predictions/second", b"hi")
    assert (status, body) == (200, b"ok")

    # an absolute path inside the store registers; one outside it is refused by name
    inside = f"{work.store}/echo.mar"
    status, body = http("POST", f"{work.management}/models?url={inside}&model_name=abs")
    assert status == 200, body
    outside = work.root / "echo_handler.py"
    status, body = http("POST", f"{work.management}/models?url={outside}&model_name=out")
    assert status == 404, body
    assert "must be inside the model store" in json.loads(body)["message"]

    # TorchServe's gRPC test matches this text for a url with '..'
    dots = "https://torchserve.s3.amazonaws.com/mar_files/../mar_files/densenet161.mar"
    message = asyncio.run(_grpc_register(work.ports["grpc_management_address"], dots))
    assert "Relative path is not allowed in url" in message

    code, out = work.run("--start", "--model-store", str(work.store))
    assert (code, out.strip()) == (1, RUNNING)

    code, out = work.run("--stop")
    assert (code, out.strip()) == (0, "TorchServe has stopped.")
    assert _exited(pid)  # --stop waited for the exit
    assert not work.pid_file.exists()
    code, out = work.run("--stop")
    assert (code, out.strip()) == (0, "TorchServe is not currently running.")

    # the files are complete once the server has exited
    assert "Model server started." in work.log("ts_log.log")
    assert "[INFO ] MainThread serve.app" in work.log("ts_log.log")
    model_log = work.log("model_log.log")
    assert "Backend received inference at: " in model_log
    assert "echo handler got 1" in model_log
    assert "serve.app" not in model_log
    assert '"POST /predictions/second" 200' in work.log("access_log.log")
    assert "Requests2XX.Count:1.0|#Level:Host|#hostname:" in work.log("ts_metrics.log")
    assert "EchoTime.ms:1.5|#ModelName:second,Level:Model|#hostname:" in work.log(
        "model_metrics.log"
    )


def test_foreground_runs_in_the_command_and_the_model_api_stays_off(work: Workdir) -> None:
    env = {**work.env, "TS_CONFIG_FILE": "config.properties", "LOG_LOCATION": "mine"}
    with work.out.open("w") as out:
        process = subprocess.Popen(
            work.command("--foreground", "--ncs", "--model-store", "model_store"),
            cwd=work.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ping(work, process)
        assert int(work.pid_file.read_text()) == process.pid  # the server is this process
        message = asyncio.run(_grpc_register(work.ports["grpc_management_address"], "x.mar"))
        assert "Model API disabled" in message
        code, said = work.run("--stop")
        assert (code, said.strip()) == (0, "TorchServe has stopped.")
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # LOG_LOCATION moves the logs; the metric files stay in ./logs (METRICS_LOCATION)
    assert (work.root / "mine" / "ts_log.log").is_file()
    assert not (work.root / "logs" / "ts_log.log").exists()
    assert (work.root / "logs" / "ts_metrics.log").is_file()


def test_a_server_that_cannot_start_is_reported(work: Workdir) -> None:
    code, out = work.run("--model-store", str(work.store), "--models", "missing.mar")
    assert code == 2, out
    assert "load_models[0]" in out
    assert "TorchServe failed to start (exit code 2)" in out
    assert not work.pid_file.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing mandatory parameter --model-store"),
        (("--model-store", "nowhere"), "--model-store directory not found: nowhere"),
        (("--model-store", "model_store", "--ts-config", "no.properties"), "--ts-config file"),
        (("--model-store", "model_store", "--workflow-store", "nowhere"), "--workflow-store"),
    ],
)
def test_bad_flags_are_refused_as_torchserve_does(
    work: Workdir, args: tuple[str, ...], message: str
) -> None:
    code, out = work.run("--start", *args)
    assert code == 1
    assert message in out
    assert not work.pid_file.exists()


def test_version_and_unknown_flags(work: Workdir) -> None:
    code, out = work.run("--version")
    assert code == 0
    assert out.startswith("TorchServe Version is 0.12.0 (serve ")
    code, out = work.run("--start", "--no-such-flag")
    assert code == 2
    assert "--no-such-flag" in out


def _exited(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def _grpc_register(address: str, url: str) -> str:
    host, port = address.split(":")
    channel = Channel(host, int(port))
    try:
        await ManagementApIsServiceStub(channel).register_model(RegisterModelRequest(url=url))
    except GRPCError as exc:
        return exc.message or ""
    finally:
        channel.close()
    raise AssertionError(f"registering {url} succeeded")


def _wait_ping(work: Workdir, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, work.out.read_text()
        try:
            if http("GET", work.inference + "/ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling an endpoint for readiness
    raise AssertionError(f"no /ping in {timeout}s:\n{work.out.read_text()}")


def _wait_ready(work: Workdir, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http("GET", work.inference + "/ready")[0] == 200:
            return
        time.sleep(0.05)  # polling an endpoint for readiness
    raise AssertionError(f"models not ready in {timeout}s:\n{work.out.read_text()}")
