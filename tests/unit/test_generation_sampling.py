"""Per-sequence sampling: greedy, seeds that reproduce, top-k/top-p, logprobs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from handlers.generation.sampling import Sampler, SamplingParams

LOGITS = torch.tensor([0.0, 2.0, 1.0, -1.0, 0.5, 1.5, -3.0, 0.2])


def draws(params: SamplingParams, n: int = 60) -> list[int]:
    sampler = Sampler(params)
    return [sampler.sample(LOGITS).token_id for _ in range(n)]


def test_temperature_zero_is_greedy() -> None:
    assert set(draws(SamplingParams(temperature=0.0))) == {1}


def test_a_seed_reproduces_the_draws() -> None:
    params = SamplingParams(temperature=1.0, seed=1234)
    first = draws(params)
    assert draws(params) == first
    assert len(set(first)) > 2  # it really samples
    assert draws(SamplingParams(temperature=1.0, seed=99)) != first


def test_seeded_sequences_do_not_disturb_each_other() -> None:
    params = SamplingParams(temperature=1.0, seed=5)
    alone = draws(params, 20)
    a, b = Sampler(params), Sampler(SamplingParams(temperature=1.0, seed=6))
    interleaved = []
    for _ in range(20):
        interleaved.append(a.sample(LOGITS).token_id)
        b.sample(LOGITS)
    assert interleaved == alone


def test_top_k_keeps_only_the_k_likeliest() -> None:
    assert set(draws(SamplingParams(temperature=5.0, top_k=2, seed=0), 200)) == {1, 5}


def test_top_p_keeps_the_smallest_head_reaching_p() -> None:
    probs = torch.softmax(LOGITS, 0)
    # tokens 1 and 5 carry less than 0.65 together, so token 2 joins them
    assert probs[1] + probs[5] < 0.65 < probs[1] + probs[5] + probs[2]
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.65, seed=0), 300)) == {1, 5, 2}
    # a tiny top_p still keeps the most likely token
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.01, seed=0))) == {1}


def test_logprobs_of_the_choice_and_the_top_alternatives() -> None:
    sampled = Sampler(SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3)).sample(LOGITS)
    expected = torch.log_softmax(LOGITS, 0)
    assert sampled.token_id == 1
    assert sampled.logprob == pytest.approx(float(expected[1]))
    assert [token for token, _ in sampled.top] == [1, 5, 2]
    assert math.fsum(math.exp(lp) for _, lp in sampled.top) < 1.0
    assert Sampler(SamplingParams(temperature=0.0)).sample(LOGITS).logprob is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1), ("top_logprobs", 21)],
)
def test_bad_parameters_name_the_field(field: str, value: float) -> None:
    params: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        SamplingParams(**params)
