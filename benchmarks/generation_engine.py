"""The generation engine's step costs on this machine: SmolLM2-135M from the bundled GGUF.

`PYTHONPATH=. .venv/bin/python -m benchmarks.generation_engine [--threads 2] [--dtype float32]
[--attention loop]` prints load time, RSS after load, prefill time of a 100-token prompt and
decode step times at batch 1, 4 and 16 (each sequence holding ~100 cached tokens). Medians of
`--repeat` runs; figures from a shared machine are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import psutil
import torch

from handlers.generation.checkpoint import load_model
from handlers.generation.gguf_loader import smollm2_gguf_path

PROMPT = (
    "The history of the city of Paris begins with a small settlement of the Parisii on an "
    "island in the Seine. Over the centuries it grew into one of the largest cities of Europe, "
    "a centre of learning, commerce, art and politics. Describe its main periods in turn."
)


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls of `run` (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--attention", choices=["loop", "padded"], default="loop")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loaded = load_model(
        smollm2_gguf_path(), dtype=getattr(torch, args.dtype), attention=args.attention
    )
    load_s = time.perf_counter() - started
    rss = psutil.Process().memory_info().rss / 2**20
    decoder, tokenizer = loaded.decoder, loaded.tokenizer
    prompt = (tokenizer.encode(PROMPT) * 2)[:100]
    assert len(prompt) == 100, len(prompt)
    count = iter(range(10**9))

    def prefill() -> None:
        seq_id = f"p{next(count)}"
        decoder.prefill(seq_id, prompt)
        decoder.release(seq_id)

    print(
        f"threads={args.threads} dtype={args.dtype} attention={args.attention} "
        f"load={load_s:.1f}s rss_after_load={rss:.0f}MiB"
    )
    print(f"prefill 100 tokens: {median_seconds(prefill, args.repeat) * 1000:.0f} ms")
    for batch in (int(b) for b in args.batches.split(",")):
        ids = [f"d{batch}-{i}" for i in range(batch)]
        for i, seq_id in enumerate(ids):
            # ragged: 90..105 cached tokens
            decoder.prefill(seq_id, prompt[: 90 + i % 16])
        step = median_seconds(lambda ids=ids: decoder.decode(ids, [198] * len(ids)), args.repeat)
        print(
            f"decode batch {batch:2d}: {step * 1000:6.1f} ms/step  "
            f"{batch / step:6.1f} tokens/s  kv={decoder.kv_bytes_in_use() / 2**20:.1f}MiB"
        )
        for seq_id in ids:
            decoder.release(seq_id)


if __name__ == "__main__":
    main()
