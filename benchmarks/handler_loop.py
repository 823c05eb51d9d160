"""The handler's own work per request, with no server: the other half of the GIL limit.

`python -m benchmarks.handler_loop --archive tiny.mar --payload tiny-json.bin
--content-type application/json --batch 8 --seconds 5` prints one `BENCH_JSON {...}` line.
It opens the archive as our server does and runs batches of the same payload through
`handlers.service.Service.predict` (input decoding, the handler, output encoding) in one
thread with one intra-op thread, as an executor runs short batches.

In one process every request costs the GIL its HTTP work on the event loop plus this work in
an executor, so one core's worth of both bounds the throughput: 1000 / (HTTP floor CPU ms per
request + handler ms per request) req/s. The report divides our throughput by that limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from handlers.loader import ServiceSpec, load_service
from handlers.messages import BatchFailure, Output, Param
from handlers.metrics import NullSink
from serve.models.archive import open_archive


@dataclass(frozen=True, slots=True)
class _Request:
    request_id: str
    params: tuple[Param, ...]
    headers: tuple[tuple[str, str], ...] = ()
    kind: int = 0  # TorchServe's own API (handlers.wire.KIND_TORCHSERVE)
    payload: object = None
    steps: int = 0  # new to the handler: no step scheduler here


def _ignore(idx: int, output: Output) -> None:
    return None


def measure(
    archive: Path, body: bytes, content_type: str, batch: int, seconds: float, warmup: float
) -> dict[str, float]:
    """Handler milliseconds per request over `seconds` of back-to-back batches."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="handler-loop-") as work:
        opened = open_archive(archive, Path(work))
        service = load_service(
            ServiceSpec(
                model_name=opened.name,
                model_dir=opened.model_dir,
                manifest=opened.manifest,
                handler=opened.handler or "base_handler",
                gpu_id=None,
                batch_size=batch,
                yaml_config=opened.yaml_config,
                metric_sink=NullSink(),
            )
        )

        def one_batch() -> None:
            requests = [
                _Request(f"r{i}", (Param("body", content_type, bytearray(body)),))
                for i in range(batch)
            ]
            outputs = service.predict(requests, _ignore)
            if isinstance(outputs, BatchFailure):
                raise RuntimeError(f"the handler failed: {outputs}")

        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            one_batch()
        batches = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            one_batch()
            batches += 1
        elapsed = time.perf_counter() - start
    requests = batches * batch
    return {
        "batch": batch,
        "requests": requests,
        "seconds": elapsed,
        "ms_per_request": elapsed / requests * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, print the result line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.handler_loop")
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--payload", type=Path, required=True, help="file holding one request body")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = measure(
        args.archive,
        args.payload.read_bytes(),
        args.content_type,
        args.batch,
        args.seconds,
        args.warmup,
    )
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
