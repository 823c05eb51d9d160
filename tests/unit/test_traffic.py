"""The traffic split on its own: validation, round trips, sticky and random choice."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from serve.config import ConfigError, build_config
from serve.routing.split import InvalidSplit, Split

KEYS = [f"user-{i}" for i in range(10_000)]


@pytest.fixture(autouse=True)
def seeded() -> Iterator[None]:
    """Random draws repeat from run to run (the bounds hold for 99.9% of seeds anyway)."""
    state = random.getstate()
    random.seed(20261130)
    yield
    random.setstate(state)


def binomial_bound(n: int, p: float, z: float = 3.29) -> float:
    """Half-width of a 99.9% interval for the count of successes in n draws."""
    return z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ([90, 10], "", "expected an object"),
        ({}, "", "at least one version"),
        ({"1.0": 0, "2.0": 0}, "", "more than 0"),
        ({"1.0": -1, "2.0": 5}, "1.0", "at least 0"),
        ({"1.0": 1.5}, "1.0", "must be an integer"),
        ({"1.0": "90"}, "1.0", "must be an integer"),
        ({"1.0": True}, "1.0", "must be an integer"),
        ({"1.0": 100, "shadow": [25]}, "shadow", "object of percentages"),
        ({"1.0": 100, "shadow": {"2.0": 101}}, "shadow.2.0", "from 0 to 100"),
        ({"1.0": 100, "shadow": {"2.0": -1}}, "shadow.2.0", "from 0 to 100"),
        ({"1.0": 100, "shadow": {"2.0": "all"}}, "shadow.2.0", "must be a number"),
        ({"shadow": {"2.0": 10}}, "", "at least one version"),
    ],
)
def test_bad_splits_name_the_entry(raw: Any, key: str, fragment: str) -> None:
    with pytest.raises(InvalidSplit) as caught:
        Split.parse(raw)
    assert caught.value.key == key
    assert fragment in caught.value.message


def test_round_trip_keeps_the_shape() -> None:
    raw = {"1.0": 90, "2.0": 10, "shadow": {"3.0": 25, "2.0": 12.5}}
    split = Split.parse(raw)
    assert split.to_dict() == raw
    assert Split.parse(split.to_dict()) == split
    assert split.versions == {"1.0", "2.0", "3.0"}
    assert Split.parse({"1.0": 100}).to_dict() == {"1.0": 100}


def test_without_drops_a_version_and_refuses_to_leave_nothing() -> None:
    split = Split.parse({"1.0": 90, "2.0": 10, "3.0": 0, "shadow": {"2.0": 50}})
    assert split.without("2.0") == Split.parse({"1.0": 90, "3.0": 0})
    assert split.without("3.0") == Split.parse({"1.0": 90, "2.0": 10, "shadow": {"2.0": 50}})
    assert Split.parse({"1.0": 90, "3.0": 0}).without("1.0") is None


def test_random_choice_follows_the_weights() -> None:
    split = Split.parse({"1.0": 75, "2.0": 25, "3.0": 0})
    counts = Counter(split.choose() for _ in range(20_000))
    assert counts["3.0"] == 0
    assert abs(counts["2.0"] - 5_000) < binomial_bound(20_000, 0.25)


def test_keys_are_sticky_and_follow_the_weights() -> None:
    split = Split.parse({"1.0": 75, "2.0": 25})
    first = {key: split.choose(key) for key in KEYS}
    # a fresh, equal split (as after a restart) places every key the same way
    again = Split.parse({"1.0": 75, "2.0": 25})
    assert all(again.choose(key) == version for key, version in first.items())
    share = sum(v == "2.0" for v in first.values())
    assert abs(share - 2_500) < binomial_bound(10_000, 0.25)


def test_shifting_weight_moves_keys_only_towards_the_gaining_version() -> None:
    before = Split.parse({"1.0": 90, "2.0": 10})
    after = Split.parse({"1.0": 80, "2.0": 20})
    pairs = [(before.choose(k), after.choose(k)) for k in KEYS]
    moved = [pair for pair in pairs if pair[0] != pair[1]]
    assert set(moved) == {("1.0", "2.0")}
    assert abs(len(moved) - 1_000) < binomial_bound(10_000, 0.10)


def test_adding_a_version_takes_keys_from_both_in_proportion() -> None:
    two = Split.parse({"1.0": 50, "2.0": 50})
    three = Split.parse({"1.0": 50, "2.0": 50, "3.0": 100})
    for key in KEYS[:2000]:
        assert three.choose(key) in (two.choose(key), "3.0")  # nothing moves between 1.0 and 2.0


def test_zero_weight_versions_get_no_keys() -> None:
    split = Split.parse({"1.0": 0, "2.0": 1})
    assert {split.choose(k) for k in KEYS[:500]} == {"2.0"}


def test_shadows_are_drawn_by_percentage_and_never_the_primary() -> None:
    split = Split.parse({"1.0": 100, "shadow": {"2.0": 100, "1.0": 100, "3.0": 0}})
    assert split.shadows_for("1.0") == ["2.0"]
    half = Split.parse({"1.0": 100, "shadow": {"2.0": 50}})
    hits = sum(bool(half.shadows_for("1.0")) for _ in range(10_000))
    assert abs(hits - 5_000) < binomial_bound(10_000, 0.5)


def test_serve_yaml_traffic_is_validated_and_kept_apart_from_versions() -> None:
    config = build_config(
        {"models": {"m": {"1.0": {"batch_size": 4}, "traffic": {"1.0": 90, "2.0": 10}}}}
    )
    assert config.traffic["m"].to_dict() == {"1.0": 90, "2.0": 10}
    assert set(config.models["m"]) == {"1.0"}
    assert config.routing_header == "X-Routing-Key"
    with pytest.raises(ConfigError) as caught:
        build_config({"models": {"m": {"traffic": {"1.0": 90, "shadow": {"2.0": 200}}}}})
    assert caught.value.key == "models.m.traffic.shadow.2.0"
    with pytest.raises(ConfigError) as caught:
        build_config({"models": {"m": {"traffic": {"1.0": 0}}}})
    assert caught.value.key == "models.m.traffic"
