"""The stepper's KV budget: reservations in arrival order, held sequences, shares given back."""

from __future__ import annotations

import pytest
import torch

from handlers.generation.decoder import LlamaDecoder
from handlers.generation.llama import Llama
from handlers.generation.stepper import BadGenerationRequest, Stepper
from handlers.generation.tiny import TINY_CONFIG, tiny_tokenizer

PROMPT = "abcd"  # 4 byte tokens


def _stepper(budget_tokens: int | None) -> Stepper:
    torch.manual_seed(0)
    decoder = LlamaDecoder(Llama(TINY_CONFIG), block_tokens=8)
    budget = None if budget_tokens is None else budget_tokens * decoder.kv_bytes_per_token
    return Stepper(decoder, tiny_tokenizer(), None, kv_budget_bytes=budget)


def _body(max_tokens: int) -> dict[str, object]:
    return {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


def test_sequences_past_the_budget_wait_in_order_until_shares_come_back() -> None:
    stepper = _stepper(budget_tokens=20)  # a: 4 + 6, b: 4 + 6, c: 4 + 2 -> a and b fit
    per_token = stepper.model.kv_bytes_per_token
    for name, tokens in (("a", 6), ("b", 6), ("c", 2)):
        stepper.start(name, _body(tokens))
    out = stepper.step(["a", "b", "c"])
    assert [len(out[s].token_ids) for s in "abc"] == [1, 1, 0]  # c is held, not prefilled
    assert stepper.kv_usage().held == 1
    assert stepper.kv_usage().reserved == 20 * per_token
    assert stepper.model.sequence_length("c") == 0
    while "a" in stepper.sequences:  # a and b finish together at 6 tokens
        out = stepper.step(["a", "b", "c"])
    assert out["a"].finish_reason == "length"
    out = stepper.step(["c"])  # the shares came back: c is admitted and prefilled
    assert len(out["c"].token_ids) == 1
    usage = stepper.kv_usage()
    assert (usage.reserved, usage.held) == (6 * per_token, 0)


def test_a_held_sequence_holds_the_ones_behind_it() -> None:
    stepper = _stepper(budget_tokens=12)
    stepper.start("a", _body(6))  # 10 tokens
    stepper.start("big", _body(8))  # 12: waits for a
    stepper.start("small", _body(1))  # 5 would fit beside a, but arrived after big
    out = stepper.step(["a", "big", "small"])
    assert (len(out["big"].token_ids), len(out["small"].token_ids)) == (0, 0)
    assert stepper.kv_usage().held == 2


def test_release_gives_the_share_back_at_once() -> None:
    stepper = _stepper(budget_tokens=10)
    stepper.start("a", _body(6))
    stepper.step(["a"])
    stepper.release(["a"])
    usage = stepper.kv_usage()
    assert (usage.reserved, usage.in_use) == (0, 0)


def test_a_sequence_larger_than_the_budget_is_refused_naming_it() -> None:
    stepper = _stepper(budget_tokens=10)
    with pytest.raises(BadGenerationRequest, match=r"KV cache.*kv_cache_mb"):
        stepper.start("a", _body(7))
    assert not stepper.sequences


def test_no_budget_admits_everything() -> None:
    stepper = _stepper(budget_tokens=None)
    for name in "abc":
        stepper.start(name, _body(4))
    out = stepper.step(["a", "b", "c"])
    assert all(len(out[s].token_ids) == 1 for s in "abc")
    assert stepper.kv_usage().budget is None
