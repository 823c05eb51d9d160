"""The cost of a gRPC call in the transport alone: our grpclib server against grpcio's asyncio one.

`python -m benchmarks.grpc_transports --server ours|grpclib|grpcio [--concurrency 32]
[--duration 5]` starts a process serving TorchServe's `Predictions` rpc with a fixed answer
(no model, no batching), on uvloop, and drives it with the benchmarks' gRPC client
(`benchmarks/pyload.py`, grpcio, one channel). It prints req/s and the server's CPU ms per
call (psutil, user + system, all its threads), so the three stacks are compared on what they
alone cost:

- `ours`: grpclib as serve/grpc runs it (coalesced writes, the one-go unary answer, the upb
  request parser; serve/grpc/transport.py, serve/grpc/fastproto.py);
- `grpclib`: grpclib as it comes (generated message classes, its own send path);
- `grpcio`: `grpc.aio.server()` in the same kind of process and event loop (uvloop), the
  request parsed by the same upb class, the answer serialized the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
ANSWER = b"[0.1, 0.2, 0.3, 0.4]"
BODY = b"[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]"
TRAILER = {"x-model-version": "1.0"}


async def _serve(kind: str, port: int) -> None:
    from serve.grpc.fastproto import FastPredictionsRequest, inputs
    from serve.grpc.transport import prediction_bytes

    if kind == "grpcio":
        import grpc

        async def answer(request: Any, context: Any) -> bytes:
            inputs(request)
            context.set_trailing_metadata(tuple(TRAILER.items()))
            return prediction_bytes(ANSWER)

        rpc = grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=FastPredictionsRequest.FromString
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Predictions": rpc}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    else:
        from grpclib.const import Cardinality, Handler
        from grpclib.server import Server

        from serve.grpc.gen.org.pytorch.serve.grpc.inference import (
            PredictionResponse,
            PredictionsRequest,
        )
        from serve.grpc.transport import CoalescingServer, send_unary

        async def ours(stream: Any) -> None:
            inputs(await stream.recv_message())
            await send_unary(stream, prediction_bytes(ANSWER), TRAILER)

        async def plain(stream: Any) -> None:
            inputs(await stream.recv_message())
            await stream.send_message(PredictionResponse(prediction=ANSWER))
            await stream.send_trailing_metadata(metadata=TRAILER)

        request_type = FastPredictionsRequest if kind == "ours" else PredictionsRequest
        handler = Handler(
            ours if kind == "ours" else plain,
            Cardinality.UNARY_UNARY,
            request_type,
            PredictionResponse,
        )

        class Service:
            def __mapping__(self) -> dict[str, Handler]:
                return {f"/{SERVICE}/Predictions": handler}

        server = (CoalescingServer if kind == "ours" else Server)([Service()])
        await server.start("127.0.0.1", port)
    sys.stdout.write(f"ready {type(asyncio.get_running_loop()).__module__}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def _load(port: int, concurrency: int, duration: float, body: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.pyload", "--url", f"grpc://127.0.0.1:{port}",
        "--body", str(body), "--transport", "grpc", "--model", "tiny",
        "--concurrency", str(concurrency), "--duration", str(duration),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    result: dict[str, Any] = json.loads(out.split("BENCH_JSON ", 1)[1])
    return result


def measure(kind: str, concurrency: int, duration: float) -> dict[str, Any]:
    """Start the server, warm it up, and measure one run."""
    from benchmarks.servers import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.grpc_transports", "--serve", kind]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        loop = process.stdout.readline().split()[-1]
        body = Path(f"/tmp/grpc-transports-{os.getpid()}.json")
        body.write_bytes(BODY)
        _load(port, concurrency, 1.0, body)
        server = psutil.Process(process.pid)
        before = server.cpu_times()
        result = _load(port, concurrency, duration, body)
        after = server.cpu_times()
        body.unlink()
    finally:
        process.kill()
        process.wait()
    cpu = (after.user + after.system) - (before.user + before.system)
    requests = result["requests"]
    return {
        "server": kind,
        "loop": loop,
        "concurrency": concurrency,
        "rps": result["rps"],
        "errors": result["errors"],
        "server_cpu_ms_per_call": cpu * 1000 / requests if requests else 0.0,
        "client_cpu_ms_per_call": result["client_cpu_s"] * 1000 / requests if requests else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    """Serve (--serve, internal) or measure and print one line per run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_transports")
    parser.add_argument("--server", default="ours,grpcio,grpclib", help="comma-separated")
    parser.add_argument("--concurrency", default="8,32", help="comma-separated")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve, args.port))
        return
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        for _ in range(args.repeats):
            for kind in args.server.split(","):
                row = measure(kind, concurrency, args.duration)
                print(
                    f"{row['server']:8} c={concurrency:<3} {row['rps']:7.0f} req/s  "
                    f"server {row['server_cpu_ms_per_call']:.3f} ms/call  "
                    f"client {row['client_cpu_ms_per_call']:.3f} ms/call  "
                    f"errors {row['errors']}  loop {row['loop']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
