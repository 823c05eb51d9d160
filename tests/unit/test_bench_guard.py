"""The guard's verdicts, on the saved reference and figures derived from it (nothing runs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks import guard

SAVED: dict[str, Any] = json.loads(guard.SAVED.read_text())


def scaled(rps: float = 1.0, cpu: float = 1.0, only: str | None = None) -> dict[str, Any]:
    """The saved points with req/s and CPU ms multiplied (every point, or `only` that one)."""
    return {
        key: {
            "rps": f["rps"] * (rps if only in (None, key) else 1.0),
            "cpu_ms": f["cpu_ms"] * (cpu if only in (None, key) else 1.0),
        }
        for key, f in SAVED["points"].items()
    }


@pytest.mark.parametrize(
    ("rps", "cpu", "expected"),
    [
        (1.0, 1.0, "OK"),
        (0.9, 1.1, "OK"),  # inside the 15 % band
        (0.8, 1.0, "SLOWER by 20%"),
        (0.7, 1.5, "SLOWER by 30%"),  # throughput is named first
        (1.0, 1.25, "MORE CPU by 25%"),
        (1.3, 0.8, "FASTER by 30%"),
    ],
)
def test_verdict_of_one_point(rps: float, cpu: float, expected: str) -> None:
    assert guard.verdict(rps, cpu) == expected


def test_the_saved_result_against_itself_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    judged = guard.compare(scaled(), SAVED)
    assert [j.verdict for j in judged] == ["OK"] * len(SAVED["points"])
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "verdict: OK (no point lost more than the 15% noise band)"


def test_one_slower_point_is_named_in_the_overall_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    judged = guard.compare(scaled(rps=0.75, only="tiny-b8 grpc c=32"), SAVED)
    assert [j.key for j in judged if j.lost] == ["tiny-b8 grpc c=32"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (
        "verdict: REGRESSION beyond the 15% noise band: tiny-b8 grpc c=32 SLOWER by 25%"
    )
    row = next(line for line in lines if line.startswith("| tiny-b8 grpc c=32 "))
    assert row.endswith("| 0.75 | 0.318 | 0.318 | 1.00 | SLOWER by 25% |")


def test_a_wider_band_accepts_what_the_default_refuses() -> None:
    now = scaled(rps=0.8)
    assert all(j.lost for j in guard.judge(now, SAVED))
    assert not any(j.lost for j in guard.judge(now, SAVED, band=0.7))
    assert not any(j.lost for j in guard.judge(scaled(rps=0.01), SAVED, band=0))


def test_the_exit_code_is_1_on_a_regression_2_with_nothing_compared_else_0() -> None:
    assert guard.exit_code(guard.judge(scaled(rps=1.2), SAVED)) == 0
    assert guard.exit_code(guard.judge(scaled(cpu=1.3, only="tiny-b1 http c=32"), SAVED)) == 1
    assert guard.exit_code(guard.judge(scaled(cpu=1.3), SAVED, band=0.7)) == 0
    other = {"tiny-b99 http c=1": {"rps": 1.0, "cpu_ms": 1.0}}
    assert guard.exit_code(guard.judge(other, SAVED)) == 2
