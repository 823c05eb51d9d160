"""The built-in load client (asyncio, uvloop, aiohttp), for when wrk is absent or not enough.

`python -m benchmarks.pyload --url U --body FILE --content-type T --duration S
(--concurrency N | --rate R) [--expected JSON --check-every K] [--transport grpc --model M]`
prints one `BENCH_JSON {...}` line. Closed loop: N workers, each sending its next request when
the last one is answered. Open loop: requests are due at fixed intervals of 1/R; each one's
latency counts from when it was due, and a request that cannot start because MAX_IN_FLIGHT are
outstanding is an error (the server is not keeping up).

A transport is a `Sender`: one coroutine per request returning (ok, body). gRPC plugs in here:
it needs TorchServe's `inference.proto` in the repository's proto/ (stubs are generated at run
time with grpcio-tools).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.answers import matches

MAX_IN_FLIGHT = 4096
Sender = Callable[[], Awaitable[tuple[bool, bytes]]]


class Tally:
    """Latencies and outcomes of the measured requests."""

    def __init__(self, expected: Any, check_every: int) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.mismatches = 0
        self._expected = expected
        self._check_every = check_every if expected is not None else 0
        self._seen = 0

    def record(self, ok: bool, body: bytes, seconds: float) -> None:
        self.latencies.append(seconds)
        if not ok:
            self.errors += 1
            return
        self._seen += 1
        if self._check_every and self._seen % self._check_every == 0:
            try:
                answer = orjson.loads(body)
            except orjson.JSONDecodeError:
                answer = None
            if not matches(answer, self._expected):
                self.mismatches += 1


async def closed_loop(send: Sender, concurrency: int, duration: float, tally: Tally) -> float:
    """`concurrency` workers until `duration` elapses; returns the measured seconds."""
    start = time.perf_counter()
    end = start + duration

    async def worker() -> None:
        while True:
            began = time.perf_counter()
            if began >= end:
                return
            ok, body = await send()
            tally.record(ok, body, time.perf_counter() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def open_loop(send: Sender, rate: float, duration: float, tally: Tally) -> float:
    """Send `rate` requests per second for `duration`; returns the measured seconds."""
    interval = 1.0 / rate
    count = math.floor(duration * rate)
    in_flight: set[asyncio.Task[None]] = set()
    start = time.perf_counter()

    async def one(due: float) -> None:
        ok, body = await send()
        tally.record(ok, body, time.perf_counter() - due)

    for index in range(count):
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            tally.record(False, b"", time.perf_counter() - due)
            continue
        task = asyncio.create_task(one(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
    return time.perf_counter() - start


async def http_sender(args: argparse.Namespace, body: bytes) -> tuple[Sender, Callable[[], Any]]:
    """POST the body; ok means status 200."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    headers = {"Content-Type": args.content_type}
    for line in args.header:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()

    async def send() -> tuple[bool, bytes]:
        try:
            async with session.post(args.url, data=body, headers=headers) as response:
                data = await response.read()
                return response.status == 200, data
        except (aiohttp.ClientError, TimeoutError):
            return False, b""

    return send, session.close


async def grpc_sender(args: argparse.Namespace, body: bytes) -> tuple[Sender, Callable[[], Any]]:
    """TorchServe's gRPC `Predictions` with the body as input `data`; ok means no error."""
    import grpc

    from benchmarks.grpc_stubs import load_stubs

    pb2, pb2_grpc = load_stubs()
    channel = grpc.aio.insecure_channel(args.url.removeprefix("grpc://"))
    stub = pb2_grpc.InferenceAPIsServiceStub(channel)
    request = pb2.PredictionsRequest(model_name=args.model, input={"data": body})

    async def send() -> tuple[bool, bytes]:
        try:
            reply = await stub.Predictions(request, timeout=args.timeout)
            return True, reply.prediction
        except grpc.aio.AioRpcError:
            return False, b""

    return send, channel.close


SENDERS = {"http": http_sender, "grpc": grpc_sender}


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values; 0 when there are none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def run(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """One measured run; the figures as LoadResult's fields."""
    expected = json.loads(args.expected) if args.expected else None
    tally = Tally(expected, args.check_every)
    send, close = await SENDERS[args.transport](args, body)
    cpu_start = time.process_time()
    try:
        if args.rate:
            seconds = await open_loop(send, args.rate, args.duration, tally)
        else:
            seconds = await closed_loop(send, args.concurrency, args.duration, tally)
    finally:
        await close()
    cpu = time.process_time() - cpu_start
    latencies = sorted(tally.latencies)
    requests = len(latencies)
    ok = requests - tally.errors
    return {
        "tool": "python" if args.transport == "http" else f"python-{args.transport}",
        "requests": requests,
        "errors": tally.errors,
        "mismatches": tally.mismatches,
        "duration": seconds,
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": (sum(latencies) / requests * 1000) if requests else 0.0,
        "max_ms": (latencies[-1] * 1000) if latencies else 0.0,
        "client_cpu_s": cpu,
        "offered_rps": args.rate,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run, print the result line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pyload")
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE (repeatable)")
    parser.add_argument("--body", required=True, help="file holding the request body")
    parser.add_argument("--content-type", default="application/octet-stream")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, help="open loop at this many requests/s")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--expected", help="JSON answer every checked response must match")
    parser.add_argument("--check-every", type=int, default=1)
    parser.add_argument("--transport", choices=sorted(SENDERS), default="http")
    parser.add_argument("--model", default="", help="model name (gRPC)")
    args = parser.parse_args(argv)
    body = Path(args.body).read_bytes()
    try:
        import uvloop

        result = uvloop.run(run(args, body))
    except ImportError:
        result = asyncio.run(run(args, body))
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
