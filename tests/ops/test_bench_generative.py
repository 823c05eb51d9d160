"""The generative load generator (benchmarks/openai_load.py) against the real server and the
tiny decoder, on both of its APIs, so the benchmark code cannot rot. Counts, never timings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.generative_report import markdown
from benchmarks.openai_load import OPENAI, TORCHSERVE, make_jobs, run_load, summarize
from tests.helpers.generation import tiny_archive
from tests.helpers.server import Server, serving

MODEL = "tiny"


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("genbench")
    store = root / "store"
    store.mkdir()
    tiny_archive(root, store, MODEL, "batchSize: 8\nminWorkers: 1\nmaxWorkers: 1\n", steps=40)
    with serving(root / "server", store=store, load=[f"{MODEL}.mar"]) as server:
        yield server


def test_jobs_are_reproducible() -> None:
    first = list(make_jobs(20, 3, min_tokens=1, max_tokens=8, cancel_fraction=0.5))
    assert first == list(make_jobs(20, 3, min_tokens=1, max_tokens=8, cancel_fraction=0.5))
    assert all(1 <= job.max_tokens <= 8 for job in first)
    assert any(job.cancel_after is not None for job in first)
    assert first != list(make_jobs(20, 4, min_tokens=1, max_tokens=8, cancel_fraction=0.5))


@pytest.mark.parametrize("api", [OPENAI, TORCHSERVE])
def test_load_counts_every_token(tiny_server: Server, api: str) -> None:
    jobs = list(make_jobs(12, 0, min_tokens=1, max_tokens=12, cancel_fraction=0.25))
    results, span = asyncio.run(
        run_load(tiny_server.inference, MODEL, jobs, streams=4, api=api, rate=50.0, seed=0)
    )
    summary = summarize(results, span, slo_ttft_ms=10_000, slo_tpot_ms=10_000)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["requests"] == 12
    wanted = {job.index: job for job in jobs}
    for result in results:
        job = wanted[result.index]
        if job.cancel_after is None:
            assert result.status == "ok"
            assert result.output_tokens == job.max_tokens  # ignore_eos fixes the length
            assert result.ttft is not None
            # a token whose bytes end mid-character comes out with the next one
            assert 0 < len(result.itls) + 1 <= result.output_tokens
        else:
            assert result.status == "cancelled"
            assert result.output_tokens >= job.cancel_after
    assert summary["output_tokens"] == sum(
        job.max_tokens for job in jobs if job.cancel_after is None
    )
    assert summary["goodput_rps"] == pytest.approx(summary["requests_per_s"])


def test_report_renders_a_partial_run(tiny_server: Server) -> None:
    jobs = list(make_jobs(4, 1, min_tokens=2, max_tokens=4))
    results, span = asyncio.run(run_load(tiny_server.inference, MODEL, jobs, streams=2))
    summary = {"summary": summarize(results, span, slo_ttft_ms=1e4, slo_tpot_ms=1e4)}
    text = markdown(
        {
            "stamp": "now", "load_before": [1.0], "load_after": [1.0],
            "batching": {"continuous": summary, "static": summary}, "torchserve": {},
        }
    )  # fmt: skip
    assert (
        "| tokens/s, 16 streams, lengths 1-128: continuous / static | ≥ 4x | 1.00x | no |" in text
    )


def test_cli_exits_zero(tiny_server: Server, tmp_path: Path) -> None:
    from benchmarks.openai_load import main

    assert main(["--url", tiny_server.inference, "--model", MODEL, "--requests", "3",
                 "--streams", "2", "--max-tokens", "3"]) == 0  # fmt: skip
