"""The continuous / static bound the generative benchmark's README quotes."""

from __future__ import annotations

import pytest

from benchmarks.decode_cost import interpolated, ratio


def test_a_flat_step_cost_bounds_the_gain_by_longest_over_mean() -> None:
    # E[max of 16 uniform 1..128] / E[mean] = ~121 / 64.5
    assert ratio(lambda _b: 1.0, trials=500) == pytest.approx(1.87, abs=0.03)


def test_a_step_cost_growing_with_the_batch_lowers_it() -> None:
    cpu = interpolated({1: 57.0, 16: 125.0})
    assert cpu(1) == 57.0
    assert cpu(16) == 125.0
    assert cpu(8) == pytest.approx(57.0 + 68.0 * 7 / 15)
    assert 1.0 < ratio(cpu, trials=500) < ratio(lambda _b: 1.0, trials=500)
