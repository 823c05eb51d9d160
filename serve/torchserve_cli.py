"""The `torchserve` command: TorchServe 0.12's launcher (ts/model_server.py) on `python -m serve`.

`torchserve --start` (the default) runs `python -m serve` detached (its own session, the
caller's stdout and stderr, as TorchServe's Java process keeps them), records its pid in
`$TMPDIR/.model_server.pid`, and returns 0 once every API is bound (TorchServe returns at
once; waiting lets a script call the APIs right after it and reports a server that failed to
start with its exit code). `--foreground` runs the server in this process instead. `--stop`
sends SIGTERM to the recorded server and waits for it to exit. The messages are TorchServe's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from serve import __version__
from serve.mar import TORCHSERVE_VERSION
from serve.started import READY_FD_ENV
from serve.telemetry.log_files import LOG_ENV, METRICS_ENV

PID_FILE_NAME = ".model_server.pid"
START_TIMEOUT = 300.0  # seconds to wait for the APIs; startup models load in the background
STOP_TIMEOUT = 60.0  # TorchServe's wait with `--stop --foreground`
LOG_DEFAULT = "logs"  # TorchServe's LOG_LOCATION when unset: ./logs
RUNNING = "TorchServe is already running, please use torchserve --stop to stop TorchServe."
# flags that have no meaning without the JVM or without workflows, and what to say about them
_IGNORED = {
    "log_config": ("--log-config", "a log4j2 file; see README: the log files"),
    "cpp_log_config": ("--cpp-log-config", "there is no C++ backend"),
    "plugins_path": ("--plugins-path", "there are no Java plugins"),
    "workflow_store": ("--workflow-store", "workflows are not supported"),
}


class LaunchError(Exception):
    """A bad flag or file: TorchServe's message, and exit code 1."""


def parser() -> argparse.ArgumentParser:
    """TorchServe 0.12's flags (`ts/arg_parser.py`), with its names and abbreviations."""
    parser = argparse.ArgumentParser(
        prog="torchserve",
        description="Start or stop the model server (TorchServe 0.12's command, over "
        "`python -m serve`)",
    )
    action = parser.add_mutually_exclusive_group(required=False)
    action.add_argument("-v", "--version", action="store_true", help="print the version")
    action.add_argument("--start", action="store_true", help="start the server (the default)")
    action.add_argument("--stop", action="store_true", help="stop the recorded server")
    parser.add_argument(
        "--ts-config", help="config.properties file (env TS_CONFIG_FILE takes precedence)"
    )
    parser.add_argument("--model-store", help="folder holding the model archives")
    parser.add_argument("--workflow-store", help="accepted; workflows are not supported")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL_PATH1 MODEL_NAME=MODEL_PATH2...",
        help="models to load at start ([name=]archive, comma lists too, or 'all')",
    )
    parser.add_argument("--log-config", help="accepted (a log4j2 file); not used")
    parser.add_argument("--cpp-log-config", help="accepted; not used")
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="run in this process (with --stop: wait for the server to exit, as always here)",
    )
    parser.add_argument(
        "--no-config-snapshots",
        "--ncs",
        action="store_true",
        help="neither restore nor write config snapshots",
    )
    parser.add_argument("--plugins-path", "--ppath", help="accepted; not used")
    parser.add_argument(
        "--disable-token-auth", "--dt", action="store_true", help="turn token authorization off"
    )
    parser.add_argument(
        "--enable-model-api", action="store_true", help="allow registering and unregistering"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns its exit code."""
    args = parser().parse_args(argv)
    if args.version:
        print(f"TorchServe Version is {TORCHSERVE_VERSION} (serve {__version__})")
        return 0
    pid_file = Path(tempfile.gettempdir()) / PID_FILE_NAME
    pid = recorded_server(pid_file)
    if args.stop:
        return stop(pid, pid_file)
    if pid is not None:
        print(RUNNING)
        return 1
    try:
        command = serve_command(args)
    except LaunchError as exc:
        print(exc)
        return 1
    for flag, reason in ignored_flags(args):
        print(f"torchserve: warning: {flag} is accepted and ignored: {reason}", file=sys.stderr)
    env = dict(os.environ)
    if not env.get(LOG_ENV) and not env.get(METRICS_ENV):
        env[LOG_ENV] = str(Path(LOG_DEFAULT).resolve())  # TorchServe always writes its files
    if args.foreground:
        pid_file.write_text(str(os.getpid()))
        os.execve(sys.executable, command, env)  # the server becomes this process (and pid)
    return start_detached(command, env, pid_file)


def serve_command(args: argparse.Namespace) -> list[str]:
    """The `python -m serve` command line for TorchServe's flags; checks them as TorchServe."""
    files = (("--log-config", args.log_config), ("--cpp-log-config", args.cpp_log_config))
    for flag, path in files:
        if path and not Path(path).is_file():
            raise LaunchError(f"{flag} file not found: {os.path.realpath(path)}")
    temp = os.environ.get("TEMP")
    if temp and not Path(temp).is_dir():
        raise LaunchError(
            f"Invalid temp directory: {temp}, please check TEMP environment variable."
        )
    ts_config = os.environ.get("TS_CONFIG_FILE") or args.ts_config
    if ts_config and not Path(ts_config).is_file():
        raise LaunchError(f"--ts-config file not found: {ts_config}")
    model_store = args.model_store or (_store_of(Path(ts_config)) if ts_config else None)
    if not model_store:
        raise LaunchError("Missing mandatory parameter --model-store")
    if not Path(model_store).is_dir():
        raise LaunchError(f"--model-store directory not found: {model_store}")
    if args.workflow_store and not Path(args.workflow_store).is_dir():
        raise LaunchError(f"--workflow-store directory not found: {args.workflow_store}")
    command = [sys.executable, "-m", "serve", "--start", "--model-store", model_store]
    if ts_config:
        command += ["--ts-config", ts_config]
    if args.models:
        command += ["--models", *args.models]
    if args.no_config_snapshots:
        command.append("--ncs")
    if args.disable_token_auth:
        command.append("--disable-token-auth")
    if args.enable_model_api:
        command.append("--enable-model-api")
    return command


def ignored_flags(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The flags given that mean nothing here, each with the reason."""
    return [(flag, why) for dest, (flag, why) in _IGNORED.items() if getattr(args, dest)]


def start_detached(command: list[str], env: dict[str, str], pid_file: Path) -> int:
    """Start the server in its own session; 0 once it is bound, else its exit code (or 1)."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            command,
            env={**env, READY_FD_ENV: str(write_end)},
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the caller's terminal does not reach it
        )
    finally:
        os.close(write_end)  # the server holds the only write end: EOF means it has exited
    pid_file.write_text(str(process.pid))
    try:
        ready, _, _ = select.select([read_end], [], [], START_TIMEOUT)
        told = os.read(read_end, 64) if ready else None
    finally:
        os.close(read_end)
    if told:
        return 0
    if told is None:
        print(
            f"TorchServe did not start within {START_TIMEOUT:g}s; it is still running "
            f"(pid {process.pid}): use torchserve --stop to stop it."
        )
        return 1
    code = process.wait()
    pid_file.unlink(missing_ok=True)
    print(f"TorchServe failed to start (exit code {code}): see the messages above.")
    return code or 1


def recorded_server(pid_file: Path) -> int | None:
    """The pid in the pid file if it is a running `python -m serve`; an orphan file is removed."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        command = psutil.Process(pid).cmdline()
    except psutil.Error:
        print("Removing orphan pid file.")
        pid_file.unlink(missing_ok=True)
        return None
    return pid if _is_serve(command) else None


def stop(pid: int | None, pid_file: Path) -> int:
    """SIGTERM to the recorded server, then wait for it (it drains in-flight requests)."""
    if pid is None:
        print("TorchServe is not currently running.")
        return 0
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        Path("key_file.json").unlink(missing_ok=True)  # TorchServe deletes the keys on stop
        _wait_exit(process, STOP_TIMEOUT)
    except psutil.TimeoutExpired:
        print("Stopping TorchServe took too long.")
        return 1
    except psutil.Error:
        print("TorchServe already stopped.")
    else:
        print("TorchServe has stopped.")
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(pid):
                pid_file.unlink()
    return 0


def _wait_exit(process: psutil.Process, timeout: float) -> None:
    """Wait until `process` has exited; a zombie (exited, its parent not told yet) counts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            process.wait(timeout=0.1)
            return
        except psutil.TimeoutExpired:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
            if time.monotonic() > deadline:
                raise
        except psutil.NoSuchProcess:
            return


def _is_serve(command: list[str]) -> bool:
    return any(command[i] == "-m" and command[i + 1] == "serve" for i in range(len(command) - 1))


def _store_of(ts_config: Path) -> str | None:
    """model_store from a config.properties (TorchServe's launcher reads it the same way)."""
    for line in ts_config.read_text(errors="replace").splitlines():
        line = line.strip()
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and key.strip() == "model_store":
            return value.strip() or None
    return None


if __name__ == "__main__":
    sys.exit(main())
