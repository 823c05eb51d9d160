"""The compute limit: the model's own forward loop in one process, no server.

`python -m benchmarks.forward --model-file resnet18.pt --shape 3,64,64 --batch 8 --seconds 5`
prints one `BENCH_JSON {...}` line with samples/s. Same TorchScript file, same
`torch.inference_mode`, and torch's default intra-op threads (what one executor of ours gets
when it is alone: all usable cores), on one pre-made input batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.models import load_torchscript


def measure(
    model_file: Path, shape: tuple[int, ...], batch: int, seconds: float, warmup: float
) -> dict[str, float]:
    """Forward passes per second and samples per second over `seconds`, after `warmup`."""
    model = load_torchscript(model_file)
    inputs = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            model(inputs)
        passes = 0
        cpu = time.process_time()
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            model(inputs)
            passes += 1
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return {
        "batch": batch,
        "passes": passes,
        "seconds": elapsed,
        "samples_per_s": passes * batch / elapsed,
        "ms_per_batch": elapsed / passes * 1000,
        "cpu_percent": cpu / elapsed * 100,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, print the result line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forward")
    parser.add_argument("--model-file", type=Path, required=True)
    parser.add_argument("--shape", required=True, help="one input's shape, e.g. 3,64,64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    result = measure(args.model_file, shape, args.batch, args.seconds, args.warmup)
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
