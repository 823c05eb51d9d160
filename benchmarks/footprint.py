"""`python -m benchmarks.footprint`: what our server holds and costs at start beyond the model.

Each run starts two fresh processes (Linux: RSS is read from /proc):
- the floor: `python -c` that imports torch, loads ResNet-18's TorchScript file and runs it once
  on one 3x64x64 image, with its RSS after each step and the time from process start to the
  end of that forward;
- our server with the same model in `load_models` (as the cold-start and memory steps of
  `python -m benchmarks` start it): seconds to the first 200 on the same image, RSS of the
  process after a fixed warm-up (200 requests at concurrency 8), then scaled to two executors
  (208 more at concurrency 16).
It prints each run and the medians. Light on the CPU: no timed load, one process at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import procfs
from benchmarks.archives import build_archive
from benchmarks.loadgen import wait_http
from benchmarks.payloads import Payload, make_payloads
from benchmarks.runner import warm_up
from benchmarks.servers import Ours

MODEL = "resnet18"
PAYLOAD = "raw-64"
MB = 2**20
WARM_SECONDS = 2.0  # the harness's memory step warms up 2-5 s

FLOOR = """
import json, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
marks = {"python_mb": rss()}
import torch
marks["torch_mb"] = rss()
model = torch.jit.load(sys.argv[1])
model.eval()
marks["loaded_mb"] = rss()
with torch.inference_mode():
    model(torch.randn(1, 3, 64, 64))
marks["answered_at"] = time.monotonic()
marks["answered_mb"] = rss()
print(json.dumps(marks))
"""


def floor(model_file: Path) -> dict[str, float]:
    """One bare process: its RSS marks and seconds from start to its first forward's end."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, str(model_file)], capture_output=True, text=True, check=True
    )
    marks: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    marks["first_answer_s"] = marks.pop("answered_at") - started
    return marks


def ours(store: Path, payload: Payload) -> dict[str, float]:
    """One fresh server: seconds to the first 200, RSS with one and with two executors (warmed
    up as the harness's memory step does)."""
    server = Ours(store)
    server.launch(preload=MODEL)
    try:
        url = server.predictions_url(MODEL)
        body = payload.path.read_bytes()
        ready = wait_http(url, 180.0, body=body, content_type=payload.content_type)
        figures = {"first_answer_s": ready - server.started_at}
        warm_up(server, MODEL, payload, WARM_SECONDS, 8, "auto")
        figures["one_executor_mb"] = procfs.usage(server.measured_pids()).rss / MB
        server.scale(MODEL, 2)
        warm_up(server, MODEL, payload, WARM_SECONDS, 16, "auto")
        figures["two_executors_mb"] = procfs.usage(server.measured_pids()).rss / MB
        return figures
    finally:
        server.stop()
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run, print each run and the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--work", type=Path, required=True,
        help="folder with store/, models/, payloads/ (as --keep-work leaves it); built if missing",
    )  # fmt: skip
    args = parser.parse_args(argv)
    store, models = args.work / "store", args.work / "models"
    if not (store / f"{MODEL}.mar").exists():
        build_archive(MODEL, store, models)
    payload = make_payloads(args.work / "payloads")[PAYLOAD]
    runs = []
    for index in range(args.runs):
        run = {f"floor_{k}": v for k, v in floor(models / f"{MODEL}.pt").items()}
        run.update({f"ours_{k}": v for k, v in ours(store, payload).items()})
        runs.append(run)
        print(f"run {index + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()), flush=True)
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    beyond = medians["ours_one_executor_mb"] - medians["floor_answered_mb"]
    gap = medians["ours_first_answer_s"] - medians["floor_first_answer_s"]
    print(f"ours beyond the floor: {beyond:+.1f} MB, {gap:+.2f} s to the first answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
