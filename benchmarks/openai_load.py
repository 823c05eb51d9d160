"""An OpenAI-style load generator for generative models, measured as `vllm bench serve` does.

`PYTHONPATH=. .venv/bin/python -m benchmarks.openai_load --url http://127.0.0.1:8080
--model smollm2 [--streams 16] [--requests 64 | --duration 60] [--rate inf] [--seed 0]`

Each request streams (`/v1/completions` with `stream: true`, or with `--api torchserve`
TorchServe's chunked `/predictions/{model}`), its output length fixed with `max_tokens` +
`ignore_eos` and drawn, like its prompt, from a seeded generator. Arrivals are all at once
(`--rate inf`) or Poisson at `--rate` req/s, and at most `--streams` run at a time.

Per request, as vLLM defines them (docs: /work/shared/reference/generative.md §5.1):
TTFT = send to the first chunk that carries output (text; as AIPerf, empty chunks are not
output: a closing chunk, or the first one of a prompt still prefilling); ITL = the gaps
between later ones;
E2E = send to the last chunk; TPOT = (E2E - TTFT) / (output tokens - 1). Overall: output
tokens/s of the completed requests over the run's span, and goodput = completed requests/s
that met both SLOs (`--slo-ttft-ms`, `--slo-tpot-ms`). aiohttp, not the openai client: its
parsing would add its own latency to every chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

WORDS = (
    "river", "city", "light", "music", "history", "garden", "engine", "winter", "market",
    "story", "island", "machine", "forest", "letter", "bridge", "mountain", "science", "ocean",
    "kitchen", "library", "window", "travel", "harbor", "painting", "village", "language",
    "train", "festival", "desert", "castle", "weather", "planet", "theatre",
)  # fmt: skip
OPENAI, TORCHSERVE = "openai", "torchserve"


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send: its prompt, its exact output length, and whether the client
    disconnects after `cancel_after` output tokens (None: it reads to the end)."""

    index: int
    prompt: str
    max_tokens: int
    cancel_after: int | None = None


@dataclass(slots=True)
class Result:
    """What one request measured (seconds, from its send)."""

    index: int
    max_tokens: int
    status: str = "ok"  # ok | cancelled | error
    error: str = ""
    sent_at: float = 0.0  # time.perf_counter() at send
    ttft: float | None = None
    e2e: float | None = None
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def make_jobs(
    count: int | None,
    seed: int,
    *,
    min_tokens: int = 1,
    max_tokens: int = 128,
    cancel_fraction: float = 0.0,
) -> Iterator[Job]:
    """`count` jobs (None: without end) drawn from `seed`: prompts of 8-24 words, output
    lengths uniform in [min_tokens, max_tokens], a `cancel_fraction` share that disconnect."""
    rng = random.Random(seed)
    for index in itertools.count() if count is None else range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
        length = rng.randint(min_tokens, max_tokens)
        cancel = rng.randint(1, length) if rng.random() < cancel_fraction else None
        yield Job(index, f"Write a short story about {words}.", length, cancel)


class _Tokens:
    """Times the output-carrying chunks of one stream into its Result."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.last = 0.0

    def chunk(self, tokens: int) -> None:
        now = time.perf_counter()
        result = self.result
        if result.ttft is None:
            result.ttft = now - result.sent_at
        else:
            result.itls.append(now - self.last)
        self.last = now
        result.e2e = now - result.sent_at
        result.output_tokens += tokens

    def wants_cancel(self, job: Job) -> bool:
        return job.cancel_after is not None and self.result.output_tokens >= job.cancel_after


async def _openai(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    job: Job,
    result: Result,
    extra: Mapping[str, Any],
) -> None:
    body = {
        "model": model, "prompt": job.prompt, "max_tokens": job.max_tokens,
        "ignore_eos": True, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}, **extra,
    }  # fmt: skip
    tokens = _Tokens(result)
    async with session.post(f"{url}/v1/completions", json=body) as response:
        if response.status != 200:
            result.status, result.error = "error", f"{response.status} {await response.text()}"
            return
        usage: int | None = None
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                result.status, result.error = "error", str(chunk["error"])
                return
            # an empty chunk (closing, or a prompt still prefilling) carries no output
            if any(c.get("text") for c in chunk.get("choices", ())):
                tokens.chunk(1)
            if chunk.get("usage"):
                usage = int(chunk["usage"]["completion_tokens"])
            if tokens.wants_cancel(job):
                response.close()  # drops the connection: the server sees a disconnect
                result.status = "cancelled"
                return
        if usage is not None:
            result.output_tokens = usage  # the server's count, as vLLM takes it


async def _torchserve(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    job: Job,
    result: Result,
    extra: Mapping[str, Any],
) -> None:
    body = {"prompt": job.prompt, "max_tokens": job.max_tokens, "ignore_eos": True,
            "temperature": 0, **extra}  # fmt: skip
    tokens = _Tokens(result)
    decoder = json.JSONDecoder()
    async with session.post(f"{url}/predictions/{model}", json=body) as response:
        if response.status != 200:
            result.status, result.error = "error", f"{response.status} {await response.text()}"
            return
        buffer = ""
        async for data in response.content.iter_any():
            buffer += data.decode()
            # chunks are JSON objects back to back; TCP may split or join them
            while buffer:
                try:
                    chunk, end = decoder.raw_decode(buffer)
                except ValueError:
                    break
                buffer = buffer[end:].lstrip()
                if "error" in chunk:
                    result.status, result.error = "error", str(chunk["error"])
                    return
                if chunk.get("token_ids"):
                    tokens.chunk(len(chunk["token_ids"]))
            if tokens.wants_cancel(job):
                response.close()
                result.status = "cancelled"
                return


Client = Callable[
    [aiohttp.ClientSession, str, str, Job, Result, Mapping[str, Any]], Awaitable[None]
]
CLIENTS: dict[str, Client] = {OPENAI: _openai, TORCHSERVE: _torchserve}


async def run_load(
    url: str,
    model: str,
    jobs: Iterable[Job],
    *,
    streams: int,
    api: str = OPENAI,
    rate: float = math.inf,
    duration: float | None = None,
    seed: int = 0,
    timeout: float = 600.0,
    into: list[Result] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[list[Result], float]:
    """Send `jobs` in order (Poisson arrivals at `rate`, or all at once), at most `streams`
    at a time, none after `duration` s; return their results (appended to `into` as they
    start, for a caller that watches them) and the run's span in s. `extra`: more body
    fields (e.g. a `logit_bias` banning EOS for a server without `ignore_eos`)."""
    client = CLIENTS[api]
    rng = random.Random(seed + 1)
    pending = iter(jobs)
    started = time.perf_counter()
    due = 0.0
    results: list[Result] = [] if into is None else into
    connector = aiohttp.TCPConnector(limit=0)
    session_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=session_timeout) as session:

        async def stream() -> None:
            nonlocal due
            for job in pending:  # one shared iterator: jobs go out in order
                wait, due = due, due + (rng.expovariate(rate) if math.isfinite(rate) else 0.0)
                await asyncio.sleep(max(0.0, wait - (time.perf_counter() - started)))
                if duration is not None and time.perf_counter() - started > duration:
                    return
                result = Result(job.index, job.max_tokens, sent_at=time.perf_counter())
                results.append(result)
                try:
                    await client(session, url, model, job, result, extra or {})
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.status, result.error = "error", repr(exc)

        await asyncio.gather(*(stream() for _ in range(streams)))
    ends = [r.sent_at + r.e2e for r in results if r.e2e is not None]
    span = (max(ends) if ends else time.perf_counter()) - started
    return results, span


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _stats(values: list[float]) -> dict[str, float | None]:
    """Milliseconds: mean, p50, p90, p99."""
    ms = [v * 1000 for v in values]
    return {
        "mean": statistics.fmean(ms) if ms else None,
        "p50": _pct(ms, 50),
        "p90": _pct(ms, 90),
        "p99": _pct(ms, 99),
    }


def summarize(
    results: Sequence[Result], span: float, *, slo_ttft_ms: float, slo_tpot_ms: float
) -> dict[str, Any]:
    """The run's figures (times in ms)."""
    done = [r for r in results if r.status == "ok"]
    tokens = sum(r.output_tokens for r in done)
    good = [
        r
        for r in done
        if r.ttft is not None
        and r.ttft * 1000 <= slo_ttft_ms
        and (r.tpot is None or r.tpot * 1000 <= slo_tpot_ms)
    ]
    return {
        "requests": len(results),
        "completed": len(done),
        "cancelled": sum(r.status == "cancelled" for r in results),
        "errors": sum(r.status == "error" for r in results),
        "error_samples": [r.error for r in results if r.status == "error"][:3],
        "span_s": span,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / span if span > 0 else 0.0,
        "requests_per_s": len(done) / span if span > 0 else 0.0,
        "goodput_rps": len(good) / span if span > 0 else 0.0,
        "slo": {"ttft_ms": slo_ttft_ms, "tpot_ms": slo_tpot_ms},
        "ttft_ms": _stats([r.ttft for r in done if r.ttft is not None]),
        "tpot_ms": _stats([t for r in done if (t := r.tpot) is not None]),
        "itl_ms": _stats([gap for r in done for gap in r.itls]),
        "e2e_ms": _stats([r.e2e for r in done if r.e2e is not None]),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openai_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", required=True, help="the inference address, http://host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api", choices=sorted(CLIENTS), default=OPENAI)
    parser.add_argument("--streams", type=int, default=16, help="at most this many at a time")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--duration", type=float, default=None, help="send none after (s)")
    parser.add_argument("--rate", type=float, default=math.inf, help="Poisson req/s (inf)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-tokens", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cancel-fraction", type=float, default=0.0)
    parser.add_argument("--slo-ttft-ms", type=float, default=2000.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=500.0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one load and print its summary."""
    args = parse_args(argv)
    jobs = make_jobs(
        args.requests if args.duration is None else None, args.seed,
        min_tokens=args.min_tokens, max_tokens=args.max_tokens,
        cancel_fraction=args.cancel_fraction,
    )  # fmt: skip
    results, span = asyncio.run(
        run_load(
            args.url.rstrip("/"), args.model, jobs, streams=args.streams, api=args.api,
            rate=args.rate, duration=args.duration, seed=args.seed,
        )
    )  # fmt: skip
    summary = summarize(results, span, slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value}")
    return 1 if summary["errors"] else 0


def result_dicts(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Results as JSON-ready dicts (with TPOT)."""
    return [{**asdict(r), "tpot": r.tpot} for r in results]


if __name__ == "__main__":
    sys.exit(main())
