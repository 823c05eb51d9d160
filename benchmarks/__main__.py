"""`python -m benchmarks`: run a benchmark suite and write the report. See benchmarks/README.md."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmarks.loadgen import TOOLS, TRANSPORTS
from benchmarks.report import markdown, write
from benchmarks.runner import Options, run
from benchmarks.servers import Ours
from benchmarks.suite import SUITES

RESULTS = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark our server against TorchServe 0.12 and a bare aiohttp server.",
    )
    parser.add_argument("--suite", choices=sorted(SUITES), default="default")
    parser.add_argument(
        "--servers", type=_names, default=("floor", "ours", "torchserve", "litserve"),
        help="comma-separated: floor, ours, torchserve, litserve (default: all four)",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios", type=_names, default=(), help="scenario keys to run (default: all)"
    )
    parser.add_argument(
        "--concurrency", type=_ints, default=(), help="closed-loop concurrencies, e.g. 1,8,32"
    )
    parser.add_argument(
        "--rate", type=_floats, default=None, help="open-loop rates in req/s ('' for none)"
    )
    parser.add_argument(
        "--torchserve-workers", type=_ints, default=(), help="TorchServe worker counts, e.g. 1,2"
    )
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point (spread)")
    parser.add_argument("--load-tool", choices=TOOLS, default="auto", help="auto: wrk if present")
    parser.add_argument("--transport", choices=TRANSPORTS, default="http")
    parser.add_argument(
        "--check-every", type=int, default=0,
        help="check every Nth answer during load (uses the Python client); 0: before load only",
    )  # fmt: skip
    parser.add_argument(
        "--skip", type=_names, default=(), help="comma-separated: forward, cold-start, memory"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=10.0,
        help="before each run, wait up to this many seconds for other work on the machine to stop",
    )  # fmt: skip
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="extra attempts for a run the CPU probe says was contended",
    )
    parser.add_argument(
        "--ours-config", action="append", default=[], metavar="KEY: VALUE",
        help="a line added to our server's YAML config, e.g. 'torch_num_threads: 1' (repeatable)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument("--keep-work", type=Path, help="keep archives and payloads in this folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write the files, print the table and where it went."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    options = Options(
        suite=SUITES[args.suite],
        servers=args.servers,
        scenarios=args.scenarios,
        concurrencies=args.concurrency,
        rates=args.rate,
        torchserve_workers=args.torchserve_workers,
        duration=args.duration,
        warmup=args.warmup,
        repeats=args.repeats,
        load_tool=args.load_tool,
        transport=args.transport,
        check_every=args.check_every,
        skip=frozenset(args.skip),
        quiet_wait=args.quiet_wait,
        retries=args.retries,
        work=args.keep_work,
    )
    Ours.extra = tuple(args.ours_config)
    results = run(options)
    results["meta"]["ours_config"] = list(args.ours_config)
    paths = write(results, args.out)
    print(markdown(results))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
