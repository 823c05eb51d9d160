"""The benchmark harness runs end to end against our server (no TorchServe, no wrk).

It asserts correct answers and zero errors, never timings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.archives import build_archive
from benchmarks.handler_loop import measure
from benchmarks.payloads import make_payloads
from benchmarks.report import gil_figures, markdown, write
from benchmarks.runner import Options, run
from benchmarks.soak import SoakOptions, soak
from benchmarks.soak import write as write_soak
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


def test_handler_loop_runs_the_archive_handler_through_our_service(tmp_path: Path) -> None:
    build_archive("tiny", tmp_path / "store", tmp_path / "models")
    payload = make_payloads(tmp_path / "payloads")["tiny-json"]
    result = measure(
        tmp_path / "store" / "tiny.mar",
        payload.body,
        payload.content_type,
        batch=4,
        seconds=0.3,
        warmup=0.05,
    )
    assert result["requests"] >= 4
    assert result["requests"] % 4 == 0
    assert result["ms_per_request"] > 0


def _point(server: str, batch: int, rps: float, cpu_ms: float) -> dict[str, Any]:
    repeat = {"rps": rps, "server_cpu_ms_per_request": cpu_ms}
    return {
        "server": server,
        "payload": "tiny-json",
        "batch_size": batch,
        "concurrency": 32,
        "repeats": [repeat],
    }


def testgil_figures_divide_by_the_floor_and_by_one_core_of_floor_plus_handler_work() -> None:
    results = {
        "points": [_point("floor", 1, 20000.0, 0.06), _point("ours", 8, 5000.0, 0.2)],
        "handler_loops": [
            {
                "model": "tiny",
                "payload": "tiny-json",
                "batch": 8,
                "repeats": [{"ms_per_request": 0.04}],
            }
        ],
    }
    [figure] = gil_figures(results)
    assert figure.met is None
    # limit = 1000 / (0.06 + 0.04) = 10000 req/s
    assert "0.25 of the floor" in figure.measured
    assert "0.50 of the GIL limit (1e+04 req/s" in figure.measured


def test_soak_serves_steadily_while_another_model_churns(tmp_path: Path) -> None:
    options = SoakOptions(duration=3.0, rate=20.0, window=1.0, sample_every=0.5, churn_pause=0.1)
    results = soak(replace(options, work=tmp_path / "work"))

    assert results["requests"] == 60
    assert results["errors"] == {}
    assert results["churn_errors"] == {}
    assert results["churn_cycles"] >= 1
    assert results["rss_mb"]["max"] >= results["rss_mb"]["start"] > 0
    assert len(results["windows"]) == 3
    paths = write_soak(results, tmp_path / "results")
    assert "| requests | ok | errors" in paths["markdown"].read_text()
