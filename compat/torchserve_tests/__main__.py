"""Run pytorch/serve v0.12.0's own black-box tests against this server and TorchServe 0.12.

    python -m compat.torchserve_tests --ts-repo /path/to/pytorch/serve [--side ours]

Fetches and installs nothing: it takes a checkout, prepares a scratch copy of it per side
(prepare.py), runs the tests of selection.py against each side with pytest (one JUnit file
each), and prints and writes the per-test table (markdown). Exit status 0 when the run
happened, whatever the tests said; 2 on a bad checkout or a missing side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compat.torchserve_tests import prepare, report, sides
from compat.torchserve_tests.reasons import REASONS
from compat.torchserve_tests.selection import TESTS

DEFAULT_WORK = sides.PROJECT / "build" / "torchserve-tests"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m compat.torchserve_tests")
    parser.add_argument("--ts-repo", type=Path, required=True, help="a pytorch/serve checkout")
    parser.add_argument(
        "--side",
        choices=("both", "ours", "torchserve"),
        default="both",
        help="which server to run the tests against (default: both, one after the other)",
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument(
        "--timeout", type=int, default=180, help="seconds one test may take (pytest-timeout)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only render the table of an earlier run"
    )
    parser.add_argument(
        "tests",
        nargs="*",
        help="test ids to rerun (their outcomes replace the last whole run's in the table)",
    )
    return parser.parse_args(argv)


def _junit_path(work: Path, side: str, partial: bool) -> Path:
    """`<side>.xml` for a whole run (earlier partial runs are dropped), else the next partial."""
    work.mkdir(parents=True, exist_ok=True)
    partials = sorted(work.glob(f"{side}.partial-*.xml"))
    if not partial:
        for old in partials:
            old.unlink()
        return work / f"{side}.xml"
    return work / f"{side}.partial-{len(partials) + 1:03d}.xml"


def _results(work: Path, side: str) -> dict[str, str]:
    """The whole run's outcomes, updated by the reruns of some tests that followed it."""
    merged = report.outcomes(work / f"{side}.xml")
    for partial in sorted(work.glob(f"{side}.partial-*.xml")):
        merged.update(report.outcomes(partial))
    return merged


def main(argv: list[str] | None = None) -> int:
    """Prepare, run the chosen sides, report."""
    args = parse_args(argv)
    work: Path = args.work.resolve()
    repo: Path = args.ts_repo.resolve()
    chosen = [sides.torchserve(), sides.ours()]
    if args.side != "both":
        chosen = [s for s in chosen if s.name == args.side]
    tests = tuple(args.tests) or TESTS
    if not args.report_only:
        isolate = sides.can_isolate()
        if not isolate:
            ports = ", ".join(map(str, sides.DEFAULT_PORTS))
            print(f"no network namespace (unshare): ports {ports} must be free", file=sys.stderr)
        for side in chosen:
            missing = sides.missing_commands(side)
            if missing:
                print(f"{side.title}: missing {', '.join(missing)}", file=sys.stderr)
                return 2
            try:
                made = prepare.prepare(repo, work / side.name)
            except prepare.PrepareError as exc:
                print(exc, file=sys.stderr)
                return 2
            if made:
                print(f"untrained mnist weights written (the checkout lacks them): {made}")
            print(f"==> {side.title}: the tests of {repo}/test/pytest", flush=True)
            junit = _junit_path(work, side.name, partial=bool(args.tests))
            sides.run_side(side, work / side.name, junit, tests, args.timeout, isolate)
    every = [sides.torchserve(), sides.ours()]
    results = [(s.title, _results(work, s.name)) for s in every]
    ids = report.expand(TESTS, [r for _, r in results])
    markdown = report.table(ids, results, REASONS)
    (work / "table.md").write_text(markdown)
    print(markdown)
    print(f"written to {work / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
