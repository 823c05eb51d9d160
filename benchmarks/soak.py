"""`python -m benchmarks.soak`: a long steady load with management churn, watching memory.

Our server (one process, loopback, free ports) serves the tiny MLP archive as `tiny`. For
`--duration` seconds (10 minutes by default) an open-loop client sends `--rate` predictions a
second (each due at its time whatever the answers do, at most `--max-outstanding` in flight)
and checks every answer against the one computed locally. Beside it a churn task cycles a
second model through its whole life: register `churn` (the same archive under another name),
scale it to 2 workers, predict with it, scale it back to 1, unregister it; then it pauses
`--churn-pause` seconds. The server's RSS is sampled every `--sample-every` seconds from
/proc. Errors are counted by kind (HTTP status, timeout, connection error, wrong answer,
client backlog). A table per window goes to stdout; JSON and Markdown to
benchmarks/results/soak-<UTC timestamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import procfs
from benchmarks.answers import matches
from benchmarks.archives import build_archive
from benchmarks.payloads import expected_answer, make_payloads
from benchmarks.servers import Ours

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """What to run."""

    duration: float = 600.0
    rate: float = 50.0
    window: float = 60.0  # seconds per table row
    sample_every: float = 5.0
    churn_pause: float = 2.0
    max_outstanding: int = 256
    timeout: float = 30.0
    work: Path | None = None


@dataclass
class Window:
    """The figures of one window of the run."""

    start: float
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss_mb: float = 0.0

    def row(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "start_s": round(self.start),
            "requests": self.requests,
            "errors": sum(self.errors.values()),
            "p50_ms": _pct(ordered, 0.50),
            "p99_ms": _pct(ordered, 0.99),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "rss_mb": round(self.rss_mb, 1),
        }


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


class Soak:
    """One soak run against a started server."""

    def __init__(self, server: Ours, options: SoakOptions, body: bytes, expected: Any) -> None:
        self.server = server
        self.options = options
        self.body = body
        self.expected = expected
        self.errors: Counter[str] = Counter()
        self.churn_errors: Counter[str] = Counter()
        self.churn_cycles = 0
        self.rss: list[tuple[float, int]] = []
        self.windows: list[Window] = []
        self.latencies: list[float] = []
        self.requests = 0
        self._outstanding = 0
        self._started = 0.0
        self.started_at = datetime.now(UTC)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        connector = aiohttp.TCPConnector(limit=self.options.max_outstanding)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._started = time.monotonic()
            self.started_at = datetime.now(UTC)
            stop = asyncio.Event()
            churn = asyncio.create_task(self._churn(session, stop))
            sampler = asyncio.create_task(self._sample(stop))
            await self._load(session)
            stop.set()
            await asyncio.gather(churn, sampler)
        self._sample_once()

    # --- steady load -------------------------------------------------------------------

    async def _load(self, session: aiohttp.ClientSession) -> None:
        interval = 1.0 / self.options.rate
        total = int(self.options.duration * self.options.rate)
        tasks: set[asyncio.Task[None]] = set()
        for i in range(total):
            due = self._started + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._outstanding >= self.options.max_outstanding:
                self._count(due, "client backlog", None)
                continue
            task = asyncio.create_task(self._predict(session, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _predict(self, session: aiohttp.ClientSession, due: float) -> None:
        self._outstanding += 1
        kind: str | None = None
        try:
            async with session.post(
                self.server.predictions_url("tiny"),
                data=self.body,
                headers={"Content-Type": "application/json"},
            ) as response:
                raw = await response.read()
            if response.status != 200:
                kind = f"HTTP {response.status}"
            elif not matches(json.loads(raw), self.expected):
                kind = "wrong answer"
        except TimeoutError:
            kind = "timeout"
        except aiohttp.ClientError as error:
            kind = f"connection: {type(error).__name__}"
        finally:
            self._outstanding -= 1
        # latency from when the request was due, so a stall is not hidden
        self._count(due, kind, (time.monotonic() - due) * 1000)

    def _count(self, due: float, kind: str | None, latency_ms: float | None) -> None:
        window = self._window(due)
        window.requests += 1
        self.requests += 1
        if kind is not None:
            window.errors[kind] += 1
            self.errors[kind] += 1
        elif latency_ms is not None:
            window.latencies.append(latency_ms)
            self.latencies.append(latency_ms)

    def _window(self, at: float) -> Window:
        index = int((at - self._started) / self.options.window)
        while len(self.windows) <= index:
            self.windows.append(Window(start=len(self.windows) * self.options.window))
        return self.windows[index]

    # --- management churn --------------------------------------------------------------

    async def _churn(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        management = self.server.management + "/models"
        register = "url=tiny.mar&model_name=churn&initial_workers=1&synchronous=true"
        steps = [
            ("register", "POST", f"{management}?{register}"),
            ("scale up", "PUT", f"{management}/churn?min_worker=2&max_worker=2&synchronous=true"),
            ("predict", "POST", self.server.predictions_url("churn")),
            ("scale down", "PUT", f"{management}/churn?min_worker=1&synchronous=true"),
            ("unregister", "DELETE", f"{management}/churn"),
        ]
        while not stop.is_set():
            for step, method, url in steps:
                kind = await self._call(session, method, url)
                if kind is not None:
                    self.churn_errors[f"{step}: {kind}"] += 1
            self.churn_cycles += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.churn_pause)
        # leave no churn model behind, whatever the last cycle did
        await self._call(session, "DELETE", f"{management}/churn")

    async def _call(self, session: aiohttp.ClientSession, method: str, url: str) -> str | None:
        data = self.body if method == "POST" and "/predictions/" in url else None
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            async with session.request(method, url, data=data, headers=headers) as response:
                await response.read()
                return None if response.status == 200 else f"HTTP {response.status}"
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as error:
            return f"connection: {type(error).__name__}"

    # --- memory ------------------------------------------------------------------------

    async def _sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._sample_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.sample_every)

    def _sample_once(self) -> None:
        assert self.server.process is not None
        rss = procfs.rss_bytes(self.server.process.pid)
        at = time.monotonic()
        self.rss.append((at - self._started, rss))
        if at - self._started < self.options.duration:
            self._window(at).rss_mb = rss / MB

    # --- results -----------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        rss = [r for _, r in self.rss]
        ordered = sorted(self.latencies)
        half = [(t, r) for t, r in self.rss if t >= self.options.duration / 2]
        return {
            "meta": {
                "started": self.started_at.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "options": {k: str(v) for k, v in asdict(self.options).items()},
            },
            "requests": self.requests,
            "ok": self.requests - sum(self.errors.values()),
            "errors": dict(self.errors),
            "achieved_rps": round(self.requests / self.options.duration, 1),
            "p50_ms": _pct(ordered, 0.50),
            "p99_ms": _pct(ordered, 0.99),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "churn_cycles": self.churn_cycles,
            "churn_errors": dict(self.churn_errors),
            "rss_mb": {
                "start": round(rss[0] / MB, 1),
                "end": round(rss[-1] / MB, 1),
                "max": round(max(rss) / MB, 1),
                "slope_second_half_mb_per_hour": _slope(half),
            },
            "rss_samples": [(round(t, 1), r) for t, r in self.rss],
            "windows": [w.row() for w in self.windows],
        }


def _slope(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares RSS growth in MB per hour (None with fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    times = [t for t, _ in samples]
    values = [r / MB for _, r in samples]
    slope = statistics.linear_regression(times, values).slope
    return round(slope * 3600, 1)


def markdown(results: dict[str, Any]) -> str:
    """The report: totals, errors by kind, RSS, and one row per window."""
    rss = results["rss_mb"]
    options = results["meta"]["options"]
    lines = [
        f"# Soak {results['meta']['started']}",
        "",
        f"{options['duration']} s at {options['rate']} req/s (tiny MLP, JSON), with a "
        f"register/scale/predict/unregister churn of a second model.",
        "",
        "| requests | ok | errors | p50 ms | p99 ms | max ms | churn cycles | churn errors |",
        "|---|---|---|---|---|---|---|---|",
        f"| {results['requests']} | {results['ok']} | {sum(results['errors'].values())} "
        f"| {results['p50_ms']} | {results['p99_ms']} | {results['max_ms']} "
        f"| {results['churn_cycles']} | {sum(results['churn_errors'].values())} |",
        "",
        f"RSS: start {rss['start']} MB, end {rss['end']} MB, max {rss['max']} MB; "
        f"second-half trend {rss['slope_second_half_mb_per_hour']} MB/h.",
        "",
    ]
    for title, errors in (("Errors", results["errors"]), ("Churn errors", results["churn_errors"])):
        if errors:
            lines += [f"{title}: " + ", ".join(f"{k} x{v}" for k, v in sorted(errors.items())), ""]
    lines += [
        "| from s | requests | errors | p50 ms | p99 ms | max ms | RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in results["windows"]:
        lines.append(
            f"| {w['start_s']} | {w['requests']} | {w['errors']} | {w['p50_ms']} "
            f"| {w['p99_ms']} | {w['max_ms']} | {w['rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """`soak-<stamp>.json` and `.md` under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    paths = {"json": folder / f"soak-{stamp}.json", "markdown": folder / f"soak-{stamp}.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    return paths


def soak(options: SoakOptions) -> dict[str, Any]:
    """Build the archive, start our server with it, run the soak, stop the server."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = options.work or Path(tmp)
        store = work / "store"
        archive = build_archive("tiny", store, work / "models")
        payload = make_payloads(work / "payloads")["tiny-json"]
        expected = expected_answer(payload, work / "models" / "tiny.pt")
        server = Ours(store)
        try:
            server.start(preload="tiny")
            logging.info("serving %s; soaking for %gs", archive.name, options.duration)
            run = Soak(server, options, payload.body, expected)
            asyncio.run(run.run())
        finally:
            server.stop()
            server.cleanup()
        return run.results()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=50.0, help="predictions per second")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per table row")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sample interval")
    parser.add_argument("--churn-pause", type=float, default=2.0, help="seconds between cycles")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options = SoakOptions(
        duration=args.duration,
        rate=args.rate,
        window=args.window,
        sample_every=args.sample_every,
        churn_pause=args.churn_pause,
    )
    results = soak(options)
    paths = write(results, args.out)
    print(markdown(results))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
