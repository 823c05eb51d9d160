"""The batching decision as a pure function: tables, no clocks, no asyncio."""

from __future__ import annotations

import pytest

from serve.batching.policy import ArrivalRate, ConcurrencyWindow, Take, Wait, decide

DELAY = 0.005


@pytest.mark.parametrize(
    ("pending", "age", "batch", "gatherable", "rate", "expected"),
    [
        # a full batch goes at once
        (8, 0.0, 8, 8, 1000.0, Take(8)),
        (12, 0.0, 8, 32, 1000.0, Take(8)),
        # the delay is an upper bound counted from the oldest request
        (3, DELAY, 8, 32, 1000.0, Take(3)),
        (3, DELAY * 2, 8, 32, 1000.0, Take(3)),
        # recent concurrency says no one else is coming: a lone client never waits
        (1, 0.0, 8, 1, 1000.0, Take(1)),
        (4, 0.0, 8, 4, 1000.0, Take(4)),
        # more could come and they arrive fast enough: wait for the rest of the delay
        (1, 0.001, 8, 8, 1000.0, Wait(DELAY - 0.001)),
        (5, 0.0, 8, 32, 1000.0, Wait(DELAY)),
        # more could come, but not before the delay runs out at this rate
        (1, 0.0, 8, 8, 10.0, Take(1)),
        # batch size 1 never waits
        (1, 0.0, 1, 32, 1000.0, Take(1)),
    ],
)
def test_decide(
    pending: int, age: float, batch: int, gatherable: int, rate: float, expected: Take | Wait
) -> None:
    decision = decide(
        pending=pending,
        oldest_age=age,
        batch_size=batch,
        max_delay=DELAY,
        gatherable=gatherable,
        arrival_rate=rate,
    )
    if isinstance(expected, Wait):
        assert isinstance(decision, Wait)
        assert decision.seconds == pytest.approx(expected.seconds)
    else:
        assert decision == expected


def test_zero_delay_always_takes_what_is_there() -> None:
    assert decide(
        pending=2, oldest_age=0.0, batch_size=8, max_delay=0.0, gatherable=32, arrival_rate=1e6
    ) == Take(2)


def test_concurrency_window_remembers_a_peak_for_one_to_two_windows() -> None:
    window = ConcurrencyWindow(window=1.0)
    window.observe(8, now=10.0)
    window.observe(3, now=10.5)
    assert window.peak(10.9) == 8
    assert window.peak(11.5) == 8  # the previous window still counts
    window.observe(2, now=11.6)
    assert window.peak(12.7) == 2
    assert window.peak(15.0) == 0


def test_arrival_rate_follows_gaps_and_decays_when_idle() -> None:
    rate = ArrivalRate(weight=0.5, max_gap=1.0)
    assert rate.rate(0.0) == 0.0
    for i in range(20):
        rate.observe(i * 0.001)
    assert rate.rate(0.019) == pytest.approx(1000.0, rel=0.05)
    assert rate.rate(0.5) < 3.0  # half a second of silence
