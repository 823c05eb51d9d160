"""The benchmark harness runs end to end against our server (no TorchServe, no wrk).

It asserts correct answers and zero errors, never timings.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import markdown, write
from benchmarks.runner import Options, run
from benchmarks.suite import Scenario, Suite

TINY = Scenario(
    key="tiny-smoke",
    title="tiny MLP, JSON, batch 4 / 5 ms",
    model="tiny",
    payload="tiny-json",
    batch_size=4,
    max_batch_delay=5,
    concurrencies=(2,),
    servers=("ours",),
)


def test_harness_drives_our_server(tmp_path: Path) -> None:
    options = Options(
        suite=Suite("smoke", (TINY,), cold_start_models=()),
        servers=("ours",),
        duration=2.0,
        warmup=0.5,
        repeats=1,
        load_tool="python",
        check_every=1,
        skip=frozenset({"forward", "cold-start", "memory"}),
        quiet_wait=0.0,
        retries=0,
        work=tmp_path / "work",
    )
    results = run(options)

    assert results["checks"] == [
        {"server": "ours", "scenario": "tiny-smoke", "ok": True, "status": 200}
    ]
    [point] = results["points"]
    assert point["server"] == "ours"
    assert point["tool"] == "python"
    [measured] = point["repeats"]
    assert measured["requests"] > 0
    assert measured["errors"] == 0
    assert measured["mismatches"] == 0

    paths = write(results, tmp_path / "results")
    assert paths["json"].is_file()
    assert "tiny-smoke" in markdown(results)
