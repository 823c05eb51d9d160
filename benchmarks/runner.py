"""Runs a suite: builds the archives and payloads, drives every server, collects the figures.

Order: the raw forward loops; then one server at a time (started once; each scenario
registers its model through the management API, checks the answers, runs every load point
`repeats` times, unregisters); then cold starts, each on a fresh process, with the memory
figures taken on the fresh ResNet-18 processes after a warm-up.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import procfs
from benchmarks.answers import matches
from benchmarks.archives import build_archive
from benchmarks.loadgen import (
    LoadResult,
    LoadSpec,
    parse_result,
    pick_tool,
    pythonpath,
    run_child,
    run_point,
    wait_http,
    wrk_path,
)
from benchmarks.models import parameter_bytes
from benchmarks.payloads import Payload, expected_answer, make_payloads
from benchmarks.probe import Probe
from benchmarks.servers import SERVERS, LitServe, Server, TorchServe
from benchmarks.suite import Scenario, Suite

logger = logging.getLogger("benchmarks")
MB = 1024 * 1024
CONTENDED = 0.8  # a probe speed below this means other tenants took CPU during the run
_PROBE = Probe()


@dataclass(slots=True)
class Options:
    """How to run a suite (the CLI's flags)."""

    suite: Suite
    servers: tuple[str, ...] = ("floor", "ours", "torchserve", "litserve")
    scenarios: tuple[str, ...] = ()  # empty: all of the suite
    concurrencies: tuple[int, ...] = ()  # empty: each scenario's own
    rates: tuple[float, ...] | None = None  # None: each scenario's own
    torchserve_workers: tuple[int, ...] = ()  # empty: each scenario's own
    duration: float = 5.0
    warmup: float = 2.0
    repeats: int = 3
    load_tool: str = "auto"
    transport: str = "http"
    check_every: int = 0
    skip: frozenset[str] = field(default_factory=frozenset)  # forward, cold-start, memory
    quiet_wait: float = 20.0  # seconds to wait for the machine's CPU to be all ours
    retries: int = 2  # extra attempts for a run that the CPU probe says was contended
    work: Path | None = None


def run(options: Options) -> dict[str, Any]:
    """Run everything the options ask for; the results as one JSON-ready dict."""
    work = options.work or Path(tempfile.mkdtemp(prefix="bench-"))
    store, models_dir = work / "store", work / "models"
    models = sorted({s.model for s in _scenarios(options)} | set(options.suite.cold_start_models))
    for model in models:
        build_archive(model, store, models_dir)
    payloads = make_payloads(work / "payloads")
    expected = {
        name: expected_answer(p, models_dir / f"{p.model}.pt")
        for name, p in payloads.items()
        if p.model in models
    }
    results: dict[str, Any] = {
        "meta": _meta(options),
        "points": [],
        "checks": [],
        "forward": [],
        "handler_loops": [],
        "cold_start": [],
        "memory": {},
        "skipped": [],
    }
    if "forward" not in options.skip:
        results["forward"] = _forward_loops(options, models_dir)
        results["handler_loops"] = _handler_loops(options, store, payloads)
    servers = [name for name in options.servers if name in SERVERS]
    if "torchserve" in servers and not TorchServe.available():
        logger.warning("TorchServe is not installed (make bench-setup); skipping it")
        results["skipped"].append("torchserve: not installed (make bench-setup)")
        servers.remove("torchserve")
    if "litserve" in servers and not LitServe.available():
        logger.warning("LitServe is not installed (make bench-setup); skipping it")
        results["skipped"].append("litserve: not installed (make bench-setup)")
        servers.remove("litserve")
    for name in servers:
        _run_server(name, options, store, payloads, expected, results)
    if "cold-start" not in options.skip:
        for name in (s for s in servers if s != "floor"):
            for model in options.suite.cold_start_models:
                first = next(p for p in payloads.values() if p.model == model)
                if not SERVERS[name].accepts(first.content_type):
                    continue
                results["cold_start"].append(
                    _cold_start(name, model, options, store, payloads, results["memory"])
                )
    _PROBE.close()
    if options.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _scenarios(options: Options) -> list[Scenario]:
    chosen = options.scenarios
    return [s for s in options.suite.scenarios if not chosen or s.key in chosen]


def _meta(options: Options) -> dict[str, Any]:
    import torch

    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "suite": options.suite.name,
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_tool": options.load_tool,
        "wrk": wrk_path() is not None,
        "transport": options.transport,
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "repeats": options.repeats,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --- the compute limit -------------------------------------------------------------------


def _forward_loops(options: Options, models_dir: Path) -> list[dict[str, Any]]:
    out = []
    wanted = {(s.model, *s.forward) for s in _scenarios(options) if s.forward}
    loops = [loop for loop in options.suite.forward_loops if loop in wanted or not wanted]
    loops += [loop for loop in wanted if loop not in loops]
    for model, shape, batch in loops:
        model_file = models_dir / f"{model}.pt"
        if not model_file.exists():
            continue
        command = [
            sys.executable, "-m", "benchmarks.forward",
            "--model-file", str(model_file), "--shape", ",".join(map(str, shape)),
            "--batch", str(batch), "--seconds", str(options.duration),
            "--warmup", str(min(options.warmup, 2.0)),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": pythonpath()}
        repeats = []
        for _ in range(options.repeats):
            for attempt in range(options.retries + 1):
                before = _PROBE.wait_full_speed(options.quiet_wait)
                result = parse_result(run_child(command, env)[0], command)
                result["cpu_speed_before"], result["cpu_speed_after"] = before, _PROBE.speed()
                result["contended"] = min(before, result["cpu_speed_after"]) < CONTENDED
                if not result["contended"] or attempt == options.retries:
                    break
            repeats.append(result)
        logger.info(
            "forward %s %s batch %d: %s samples/s",
            model,
            "x".join(map(str, shape)),
            batch,
            ", ".join(f"{r['samples_per_s']:.0f}" for r in repeats),
        )
        out.append({"model": model, "shape": list(shape), "batch": batch, "repeats": repeats})
    return out


def _handler_loops(
    options: Options, store: Path, payloads: dict[str, Payload]
) -> list[dict[str, Any]]:
    """The handler's own ms per request, for the scenarios that report their GIL limit."""
    out = []
    wanted = {(s.model, s.payload, s.batch_size) for s in _scenarios(options) if s.gil_limit}
    for model, payload_name, batch in sorted(wanted):
        payload = payloads[payload_name]
        command = [
            sys.executable, "-m", "benchmarks.handler_loop",
            "--archive", str(store / f"{model}.mar"), "--payload", str(payload.path),
            "--content-type", payload.content_type, "--batch", str(batch),
            "--seconds", str(options.duration), "--warmup", str(min(options.warmup, 2.0)),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": pythonpath()}
        repeats = []
        for _ in range(options.repeats):
            _PROBE.wait_full_speed(options.quiet_wait)
            repeats.append(parse_result(run_child(command, env)[0], command))
        logger.info(
            "handler %s %s batch %d: %s ms/request",
            model,
            payload_name,
            batch,
            ", ".join(f"{r['ms_per_request']:.4f}" for r in repeats),
        )
        out.append({"model": model, "payload": payload_name, "batch": batch, "repeats": repeats})
    return out


# --- one server through its scenarios ---------------------------------------------------------


def _run_server(
    name: str,
    options: Options,
    store: Path,
    payloads: dict[str, Payload],
    expected: dict[str, Any],
    results: dict[str, Any],
) -> None:
    server = SERVERS[name](store)
    logger.info("starting %s", server.label)
    server.start()
    try:
        idle_pids = server.measured_pids()
        if idle_pids:  # LitServe starts only once a model is registered
            idle = procfs.usage(idle_pids).rss
            results["memory"].setdefault(name, {})["idle_no_model_mb"] = idle / MB
        for scenario in _scenarios(options):
            if name not in scenario.servers:
                continue
            if not server.accepts(payloads[scenario.payload].content_type):
                continue
            if name == "litserve" and options.transport != "http":
                continue  # LitServe serves HTTP only
            workers: tuple[int, ...] = (1,)
            if name == "torchserve":
                workers = options.torchserve_workers or scenario.torchserve_workers
            for count in workers:
                _run_scenario(server, scenario, count, options, payloads, expected, results)
    finally:
        server.stop()
        server.cleanup()


def _label(server: Server, workers: int) -> str:
    if server.name == "torchserve":
        return f"TorchServe {workers}w"
    return server.label


def _run_scenario(
    server: Server,
    scenario: Scenario,
    workers: int,
    options: Options,
    payloads: dict[str, Payload],
    expected: dict[str, Any],
    results: dict[str, Any],
) -> None:
    label = _label(server, workers)
    payload = payloads[scenario.payload]
    server.register(
        scenario.model,
        batch_size=scenario.batch_size,
        max_batch_delay=scenario.max_batch_delay,
        workers=workers,
    )
    try:
        if server.name != "floor":
            results["checks"].append(
                _check(server, label, scenario, payload, expected[scenario.payload])
            )
        loads: list[tuple[int, float | None]] = [
            (c, None) for c in options.concurrencies or scenario.concurrencies
        ]
        rates = scenario.rates if options.rates is None else options.rates
        loads += [(0, r) for r in rates]
        for concurrency, rate in loads:
            spec = LoadSpec(
                url=_url(server, scenario.model, payload, options.transport),
                payload=payload,
                duration=options.duration,
                warmup=options.warmup,
                concurrency=max(1, concurrency),
                rate=rate,
                transport=options.transport,
                model=scenario.model,
                expected=expected.get(scenario.payload) if server.name != "floor" else None,
                check_every=options.check_every if server.name != "floor" else 0,
            )
            tool = pick_tool(options.load_tool, spec)
            repeats = [_repeat(server, spec, tool, options) for _ in range(options.repeats)]
            point = {
                "scenario": scenario.key,
                "title": scenario.title,
                "server": server.name,
                "label": label,
                "workers": workers,
                "payload": scenario.payload,
                "batch_size": scenario.batch_size,
                "max_batch_delay": scenario.max_batch_delay,
                "concurrency": concurrency if rate is None else None,
                "rate": rate,
                "tool": tool,
                "repeats": repeats,
            }
            results["points"].append(point)
            logger.info(
                "%s | %s | %s: %s req/s, p99 %s ms, errors %d",
                scenario.key,
                label,
                f"c={concurrency}" if rate is None else f"rate={rate:g}",
                ", ".join(f"{r['rps']:.0f}" for r in repeats),
                ", ".join(f"{r['p99_ms']:.1f}" for r in repeats),
                sum(r["errors"] for r in repeats),
            )
    finally:
        server.unregister(scenario.model)


def _repeat(server: Server, spec: LoadSpec, tool: str, options: Options) -> dict[str, Any]:
    """One repeat of a point; tried again (up to options.retries) while the CPU was contended."""
    discarded = []
    for _ in range(options.retries + 1):
        measured = _measure(server, spec, tool, options)
        if not measured["contended"]:
            break
        discarded.append(measured)
    measured["discarded"] = discarded[:-1] if measured["contended"] else discarded
    return measured


def _measure(server: Server, spec: LoadSpec, tool: str, options: Options) -> dict[str, Any]:
    marks: dict[str, Any] = {}
    pids = server.measured_pids()
    speed_before = _PROBE.wait_full_speed(options.quiet_wait)

    def before() -> None:
        marks["sampler"] = procfs.Sampler(pids).__enter__()
        marks["start"] = procfs.usage(pids)

    def after() -> None:
        marks["end"] = procfs.usage(pids)
        marks["sampler"].__exit__(None, None, None)

    result: LoadResult = run_point(spec, tool, before=before, after=after)
    speed_after = _PROBE.speed()
    cpu = marks["end"].cpu - marks["start"].cpu
    ok = max(1, result.requests - result.errors)
    return {
        **result.to_dict(),
        "server_cpu_s": cpu,
        "server_cpu_percent": cpu / result.duration * 100 if result.duration else 0.0,
        "server_cpu_ms_per_request": cpu / ok * 1000,
        "server_rss_mb": marks["end"].rss / MB,
        "server_peak_rss_mb": marks["sampler"].peak / MB,
        "client_cpu_percent": result.client_cpu_s / result.duration * 100
        if result.duration
        else 0.0,
        "cpu_speed_before": speed_before,
        "cpu_speed_after": speed_after,
        "contended": min(speed_before, speed_after) < CONTENDED,
    }


def _check(
    server: Server, label: str, scenario: Scenario, payload: Payload, expected: Any
) -> dict[str, Any]:
    """One request of the scenario's payload; its answer must match the local model's."""
    status, body = _post(_url(server, scenario.model, payload, "http"), payload)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = body[:200].decode(errors="replace")
    ok = status == 200 and matches(answer, expected)
    if not ok:
        logger.error("%s %s: wrong answer %r (expected %r)", label, scenario.key, answer, expected)
    return {"server": label, "scenario": scenario.key, "ok": ok, "status": status}


def _url(server: Server, model: str, payload: Payload, transport: str) -> str:
    """Where a payload goes: its own route (predictions, or OIP infer) over HTTP."""
    if transport != "http":
        return server.target(model, transport)
    return server.route_url(payload.route, model)


def _post(url: str, payload: Payload) -> tuple[int, bytes]:
    headers = {"Content-Type": payload.content_type, **dict(payload.headers)}
    request = urllib.request.Request(url, data=payload.body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- cold start and memory ---------------------------------------------------------------------


def _cold_start(
    name: str,
    model: str,
    options: Options,
    store: Path,
    payloads: dict[str, Payload],
    memory: dict[str, Any],
) -> dict[str, Any]:
    """Process start → first successful prediction, on fresh processes; memory on the last."""
    payload = next(p for p in payloads.values() if p.model == model)
    seconds = []
    for attempt in range(options.repeats):
        _PROBE.wait_full_speed(options.quiet_wait)
        server = SERVERS[name](store)
        server.launch(preload=model)
        try:
            ready = wait_http(
                server.predictions_url(model),
                180.0,
                body=payload.body,
                content_type=payload.content_type,
            )
            seconds.append(ready - server.started_at)
            last = attempt == options.repeats - 1
            if last and model == options.suite.memory_model and "memory" not in options.skip:
                memory.setdefault(name, {}).update(_memory(server, model, payload, options))
        finally:
            server.stop()
            server.cleanup()
    logger.info("cold start %s %s: %s s", name, model, ", ".join(f"{s:.2f}" for s in seconds))
    return {"server": name, "model": model, "seconds": seconds}


def warm_up(
    server: Server, model: str, payload: Payload, seconds: float, concurrency: int, tool: str
) -> None:
    """Closed-loop load for `seconds` before a memory reading, then let the last batches end."""
    spec = LoadSpec(
        url=server.predictions_url(model),
        payload=payload,
        duration=seconds,
        warmup=0,
        concurrency=concurrency,
    )
    run_point(spec, pick_tool(tool, spec))
    time.sleep(0.5)


def _memory(server: Server, model: str, payload: Payload, options: Options) -> dict[str, Any]:
    """RSS after a warm-up with one executor (worker), and for ours with two."""
    warm = min(max(options.warmup, 2.0), 5.0)
    figures: dict[str, Any] = {"model": model, "weights_mb": parameter_bytes(model) / MB}
    warm_up(server, model, payload, warm, 8, options.load_tool)
    pids = server.measured_pids()
    figures["one_executor_mb"] = procfs.usage(pids).rss / MB
    if server.name == "torchserve":
        frontend = pids[0]
        figures["frontend_mb"] = procfs.rss_bytes(frontend) / MB
        figures["workers_mb"] = sum(procfs.rss_bytes(p) for p in pids[1:]) / MB
        return figures
    server.scale(model, 2)
    warm_up(server, model, payload, warm, 16, options.load_tool)
    figures["two_executors_mb"] = procfs.usage(server.measured_pids()).rss / MB
    figures["second_executor_adds_mb"] = figures["two_executors_mb"] - figures["one_executor_mb"]
    return figures
