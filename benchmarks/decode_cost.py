"""`python -m benchmarks.decode_cost`: what a decode step of SmolLM2 costs at each batch size,
and the continuous / static ratio those costs allow (benchmarks/README.md, "Generative").

The engine alone, no server: `LlamaDecoder.decode` over 1-16 sequences of ~60 cached tokens,
medians of 7, at the thread counts given. Then both schedules of the `batching` part are
simulated with that cost: 16 sequences, output lengths uniform 1-128; static runs a batch until
its longest sequence ends (finished ones leave the step), continuous keeps 16 live. With a
cost flat in the batch size (a GPU at these sizes) the bound is E[longest of 16] / E[mean].
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable

BATCHES = (1, 2, 4, 8, 12, 16)


def step_costs(threads: int) -> dict[int, float]:
    """Median ms of one decode step at each batch size."""
    import torch

    from benchmarks.generative import gguf_path
    from handlers.generation.checkpoint import load_model

    torch.set_num_threads(threads)
    loaded = load_model(gguf_path())
    decoder, tokenizer = loaded.decoder, loaded.tokenizer
    prompt = tokenizer.encode("Tell me about the river number 3. Please be brief.")
    seqs = [f"s{i}" for i in range(max(BATCHES))]
    for seq in seqs:
        decoder.prefill(seq, prompt + [198] * 40)
    costs = {}
    for batch in BATCHES:
        ids, tokens = seqs[:batch], [198] * batch
        decoder.decode(ids, tokens)
        times = []
        for _ in range(7):
            started = time.perf_counter()
            decoder.decode(ids, tokens)
            times.append(time.perf_counter() - started)
        costs[batch] = statistics.median(times) * 1000
    return costs


def ratio(cost: Callable[[int], float], batch: int = 16, trials: int = 2000) -> float:
    """Continuous / static output tokens per second under `cost(live sequences)` ms a step."""
    rng = random.Random(0)
    static_ms = static_tokens = 0.0
    for _ in range(trials):
        lengths = [rng.randint(1, 128) for _ in range(batch)]
        static_tokens += sum(lengths)
        for step in range(max(lengths)):
            static_ms += cost(sum(1 for n in lengths if n > step))
    return (batch / cost(batch)) / (static_tokens / static_ms)


def interpolated(costs: dict[int, float]) -> Callable[[int], float]:
    """The measured cost between the measured batch sizes."""
    points = sorted(costs.items())

    def cost(batch: int) -> float:
        for (b0, c0), (b1, c1) in itertools.pairwise(points):
            if b0 <= batch <= b1:
                return c0 + (c1 - c0) * (batch - b0) / (b1 - b0)
        return points[-1][1]

    return cost


def main(argv: list[str] | None = None) -> int:
    """Print the step costs and the ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_cost")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts to time")
    args = parser.parse_args(argv)
    print(f"flat step cost (GPU-like): continuous / static ≤ {ratio(lambda _b: 1.0):.2f}x")
    for threads in (int(t) for t in args.threads.split(",")):
        costs = step_costs(threads)
        shown = ", ".join(f"b{b} {ms:.0f}" for b, ms in costs.items())
        print(f"{threads} thread(s): decode step ms {shown}")
        print(f"  continuous / static at these costs: {ratio(interpolated(costs)):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
