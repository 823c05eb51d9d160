"""The two servers under test and how one pytest run is set up against each.

Each side gets a `bin` folder first on PATH with its `torchserve` and `torch-model-archiver`.
The wrappers drop the test process's PYTHONPATH (the checkout, for its `ts.launcher`), so the
server under test imports its own `ts` and never the checkout's. Each side runs in its own
scratch copy with its own TMPDIR: TorchServe's tests use `$TMPDIR/workspace` and the pid file
`$TMPDIR/.model_server.pid`, which `torchserve --stop` would otherwise share with other users.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compat.torchserve_tests.prepare import STUBS_DIR, WHEELHOUSE

PROJECT = Path(__file__).resolve().parents[2]
TORCHSERVE_VENV = PROJECT / "benchmarks" / ".venv-torchserve"
# TorchServe's tests talk to the default ports; a private network namespace keeps them apart
# from anything else on the machine (both ways)
DEFAULT_PORTS = (8080, 8081, 8082, 7070, 7071)


@dataclass(frozen=True, slots=True)
class Side:
    """One server under test: its name in the report and its two commands."""

    name: str
    title: str
    torchserve: tuple[str, ...]  # argv prefix of its `torchserve` command
    archiver: tuple[str, ...]  # argv prefix of its `torch-model-archiver`
    env: tuple[tuple[str, str], ...]  # what its commands run with (PYTHONPATH)


def ours() -> Side:
    """This server's `torchserve` (serve/torchserve_cli.py) from this checkout."""
    return Side(
        name="ours",
        title="this server",
        torchserve=(sys.executable, "-m", "serve.torchserve_cli"),
        archiver=(str(Path(sys.executable).parent / "torch-model-archiver"),),
        env=(("PYTHONPATH", str(PROJECT)),),
    )


def torchserve(venv: Path = TORCHSERVE_VENV) -> Side:
    """The real TorchServe 0.12 installed in `venv` (make bench-setup makes it)."""
    return Side(
        name="torchserve",
        title="TorchServe 0.12",
        torchserve=(str(venv / "bin" / "torchserve"),),
        archiver=(str(venv / "bin" / "torch-model-archiver"),),
        env=(),
    )


def missing_commands(side: Side) -> list[str]:
    """The commands of `side` that do not exist here."""
    return [c[0] for c in (side.torchserve, side.archiver) if shutil.which(c[0]) is None]


def write_wrappers(side: Side, bin_dir: Path) -> None:
    """`torchserve` and `torch-model-archiver` scripts in `bin_dir` that run `side`'s."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in side.env)
    for name, argv in (("torchserve", side.torchserve), ("torch-model-archiver", side.archiver)):
        script = bin_dir / name
        command = " ".join(shlex.quote(a) for a in argv)
        script.write_text(f'#!/bin/sh\nexec env -u PYTHONPATH {env} {command} "$@"\n')
        script.chmod(0o755)
    # the tests run helper scripts with a bare `python` (test_torch_compile: `python model.py`);
    # a script, not a link: a linked venv python would not find its venv
    for name in ("python", "python3"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        script.chmod(0o755)


def can_isolate() -> bool:
    """Whether `unshare --net` works here (root, or user namespaces allowed)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = ["unshare", "--net", "ip", "link", "set", "lo", "up"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def pytest_command(
    copy: Path, junit: Path, tests: tuple[str, ...], timeout: int, isolate: bool
) -> list[str]:
    """The command that runs `tests` from `copy/test/pytest`, then stops what they left."""
    pytest = [
        sys.executable,
        "-m",
        "pytest",
        "-v",
        "-p",
        "no:cacheprovider",
        # the copy lies inside this checkout: without these pytest would take this project's
        # pyproject.toml (filterwarnings = error) for TorchServe's tests, which have no config
        "-c",
        os.devnull,
        f"--rootdir={copy}",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        f"--timeout={timeout}",
        *tests,
    ]
    # a test that fails mid-way can leave its server running: stop it before leaving
    script = (
        f"{shlex.join(pytest)}; rc=$?; torchserve --stop --foreground >/dev/null 2>&1; exit $rc"
    )
    if isolate:
        script = f"ip link set lo up && {{ {script}; }}"
        return ["unshare", "--net", "sh", "-c", script]
    return ["sh", "-c", script]


def run_side(
    side: Side, copy: Path, junit: Path, tests: tuple[str, ...], timeout: int, isolate: bool
) -> int:
    """Run `tests` against `side` from its scratch copy; pytest's exit code."""
    bin_dir = copy / ".compat-bin"
    write_wrappers(side, bin_dir)
    tmp = copy / ".compat-tmp"
    # TorchServe's CI makes $TMPDIR/workspace/model_store; test_utils.MODEL_STORE and the
    # config.properties files of test_metrics and the gRPC tests live there
    (tmp / "workspace" / "model_store").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # the checkout's `ts` (ts.launcher) and its gRPC stubs, ahead of anything installed
    env["PYTHONPATH"] = os.pathsep.join((str(copy), str(copy / STUBS_DIR)))
    env["TMPDIR"] = str(tmp)
    # the per-model pip installs run where PyPI is out of reach (the network namespace)
    env["PIP_NO_INDEX"] = "1"
    env["PIP_FIND_LINKS"] = str(copy / WHEELHOUSE)
    for key in ("TS_CONFIG_FILE", "LOG_LOCATION", "METRICS_LOCATION", "TS_METRICS_CONFIG"):
        env.pop(key, None)
    cmd = pytest_command(copy, junit, tests, timeout, isolate)
    return subprocess.run(cmd, cwd=copy / "test" / "pytest", env=env, check=False).returncode
