"""Drives load at a server: wrk when installed, else the built-in asyncio client.

Both run as child processes, so their CPU time is theirs alone (wait4's rusage, or the
client's own count). A point is one warm-up run whose figures are dropped, then one measured
run. Closed loop (`concurrency`) keeps that many requests outstanding; open loop (`rate`)
sends on a fixed schedule whatever the answers do, and times each request from when it was
due, so a stalled server is not hidden (no coordinated omission). Open loop and gRPC always
use the built-in client; a gRPC driver plugs in there as another sender (see pyload.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.payloads import Payload

TOOLS = ("auto", "wrk", "python")
TRANSPORTS = ("http", "grpc")
_MARK = "BENCH_JSON "

# wrk: POST the payload file; print the figures as one JSON line when done.
_WRK_SCRIPT = r"""
wrk.method = "POST"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%f,"max":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What load to send: closed loop at `concurrency`, or open loop at `rate` req/s."""

    url: str
    payload: Payload
    duration: float
    warmup: float
    concurrency: int = 1
    rate: float | None = None
    transport: str = "http"
    model: str = ""  # gRPC model name
    expected: Any = None  # the python client checks answers against it when set
    check_every: int = 0
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The measured run's figures (latencies in ms)."""

    tool: str
    requests: int
    errors: int
    mismatches: int
    duration: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    client_cpu_s: float
    offered_rps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str | None:
    """wrk's path when installed."""
    return shutil.which("wrk")


def pick_tool(requested: str, spec: LoadSpec) -> str:
    """The tool that will drive `spec`: wrk only for closed-loop HTTP without answer checks."""
    python_only = spec.rate is not None or spec.transport != "http" or spec.check_every > 0
    if requested == "wrk":
        if wrk_path() is None:
            raise RuntimeError("--load-tool wrk: wrk is not installed (apt-get install wrk)")
        if python_only:
            raise RuntimeError("wrk drives closed-loop HTTP only; use --load-tool python")
        return "wrk"
    if requested == "python" or python_only or wrk_path() is None:
        return "python"
    return "wrk"


def run_point(spec: LoadSpec, tool: str, *, before: Any = None, after: Any = None) -> LoadResult:
    """Warm up, then measure; `before()`/`after()` bracket the measured run (server figures)."""
    if spec.warmup > 0:
        _run(spec, tool, spec.warmup, checking=False)
    if before is not None:
        before()
    result = _run(spec, tool, spec.duration, checking=True)
    if after is not None:
        after()
    return result


def _run(spec: LoadSpec, tool: str, seconds: float, *, checking: bool) -> LoadResult:
    if tool == "wrk":
        return _run_wrk(spec, seconds)
    return _run_python(spec, seconds, checking=checking)


def _run_wrk(spec: LoadSpec, seconds: float) -> LoadResult:
    wrk = wrk_path()
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODY": str(spec.payload.path),
        "BENCH_CONTENT_TYPE": spec.payload.content_type,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in spec.payload.headers),
    }
    command = [
        wrk, "-t", "1", "-c", str(spec.concurrency), "-d", f"{max(1, round(seconds))}s",
        "--timeout", f"{round(spec.timeout)}s", "-s", script.name, spec.url,
    ]  # fmt: skip
    try:
        out, rusage = run_child(command, env)
    finally:
        os.unlink(script.name)
    raw = parse_result(out, command)
    duration = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    ok = max(0, raw["requests"] - raw["status"])
    return LoadResult(
        tool="wrk",
        requests=raw["requests"],
        errors=errors,
        mismatches=0,
        duration=duration,
        rps=ok / duration if duration else 0.0,
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        mean_ms=raw["mean"] / 1000,
        max_ms=raw["max"] / 1000,
        client_cpu_s=rusage,
    )


def _run_python(spec: LoadSpec, seconds: float, *, checking: bool) -> LoadResult:
    command = [
        sys.executable, "-m", "benchmarks.pyload",
        "--url", spec.url,
        "--body", str(spec.payload.path),
        "--content-type", spec.payload.content_type,
        "--duration", str(seconds),
        "--timeout", str(spec.timeout),
        "--transport", spec.transport,
        "--model", spec.model or spec.payload.model,
    ]  # fmt: skip
    for name, value in spec.payload.headers:
        command += ["--header", f"{name}: {value}"]
    if spec.rate is not None:
        command += ["--rate", str(spec.rate)]
    else:
        command += ["--concurrency", str(spec.concurrency)]
    if checking and spec.expected is not None and spec.check_every > 0:
        command += ["--expected", json.dumps(spec.expected), "--check-every", str(spec.check_every)]
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    out, _ = run_child(command, env)
    return LoadResult(**parse_result(out, command))


def pythonpath() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    current = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{current}" if current else root


def run_child(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a load tool to the end; its stdout and its CPU seconds (user + system)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {process.returncode}: {stderr[-2000:]}")
    return stdout, rusage.ru_utime + rusage.ru_stime


def parse_result(out: str, command: list[str]) -> dict[str, Any]:
    for line in out.splitlines():
        if line.startswith(_MARK):
            parsed: dict[str, Any] = json.loads(line[len(_MARK) :])
            return parsed
    raise RuntimeError(f"{' '.join(command[:3])}... printed no result: {out[-2000:]}")


def wait_http(url: str, timeout: float, *, body: bytes = b"", content_type: str = "") -> float:
    """Poll `url` (POST when there is a body) until it answers 200; returns time.monotonic()."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            request = urllib.request.Request(url, data=body or None, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:g}s")
        time.sleep(0.02)
