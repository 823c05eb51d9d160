"""A model's traffic split: integer weights over its versions, plus optional shadow copies.

Pure: no asyncio, no registry. `Split.parse` validates the JSON/YAML shape
(`{"1.0": 90, "2.0": 10, "shadow": {"2.0": 25}}`), `to_dict` and `parse` round-trip it
(snapshots persist that shape), and `choose` picks the version of one unversioned request.

A request with a routing key is placed by weighted rendezvous hashing: every version scores
`weight / -ln(u)` with `u` a hash of (key, version) in (0, 1), and the highest score wins. A
key's scores do not depend on the other versions, so changing the weights only moves the keys
whose winner changed: raising one version's weight moves keys to it and to no other version.
Without a key the choice is random with the weights.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serve.json_numbers import whole_number

SHADOW_KEY = "shadow"
_SCALE = 2.0**64


class InvalidSplit(ValueError):
    """A split that cannot be used; `key` names the offending entry ("" for the whole)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Split:
    """Weights by version (in the order given) and shadow percentages by version."""

    weights: tuple[tuple[str, int], ...]
    shadow: tuple[tuple[str, float], ...] = ()
    _cumulative: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # versions with weight > 0, each with a hasher already fed its name (copied per key)
    _live: tuple[tuple[str, int, Any], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = 0
        cumulative = []
        for _, weight in self.weights:
            total += weight
            cumulative.append(total)
        if total <= 0:
            raise InvalidSplit("", "the weights must add up to more than 0")
        object.__setattr__(self, "_cumulative", tuple(cumulative))
        live = tuple((v, w, _seeded(v)) for v, w in self.weights if w > 0)
        object.__setattr__(self, "_live", live)

    @classmethod
    def parse(cls, raw: Any) -> Split:
        """Validate the API/config shape: integer weights >= 0 summing above 0, shadow 0-100."""
        if not isinstance(raw, Mapping):
            raise InvalidSplit("", f"expected an object of weights by version, got {raw!r}")
        weights: list[tuple[str, int]] = []
        shadow: list[tuple[str, float]] = []
        for version, value in raw.items():
            name = str(version)
            if name == SHADOW_KEY:
                shadow = _parse_shadow(value)
                continue
            if not name:
                raise InvalidSplit(name, "a version name cannot be empty")
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidSplit(name, f"weight must be an integer, got {value!r}")
            if value < 0:
                raise InvalidSplit(name, f"weight must be at least 0, got {value}")
            weights.append((name, value))
        if not weights:
            raise InvalidSplit("", "name at least one version with a weight")
        return cls(tuple(weights), tuple(shadow))

    def to_dict(self) -> dict[str, Any]:
        """The API shape: `{"1.0": 90, "2.0": 10}`, with `"shadow": {...}` when set."""
        body: dict[str, Any] = dict(self.weights)
        if self.shadow:
            body[SHADOW_KEY] = {v: whole_number(p) for v, p in self.shadow}
        return body

    @property
    def versions(self) -> frozenset[str]:
        """Every version the split names, weighted or shadow."""
        return frozenset(v for v, _ in self.weights) | frozenset(v for v, _ in self.shadow)

    def without(self, version: str) -> Split | None:
        """The split once `version` is gone; None when no weight would be left."""
        weights = tuple((v, w) for v, w in self.weights if v != version)
        if sum(w for _, w in weights) <= 0:
            return None
        return Split(weights, tuple((v, p) for v, p in self.shadow if v != version))

    def choose(self, key: str | None = None) -> str:
        """The version for one request: sticky by `key` when given, else random by weight."""
        if key is not None:
            return self.choose_by_key(key)
        point = random.random() * self._cumulative[-1]
        return self.weights[bisect_right(self._cumulative, point)][0]

    def choose_by_key(self, key: str) -> str:
        """Weighted rendezvous hashing: the same key lands on the same version."""
        live = self._live
        if len(live) == 1:
            return live[0][0]
        best, best_score = live[0][0], -1.0
        encoded = key.encode("utf-8", "surrogatepass")
        for version, weight, seeded in live:
            hasher = seeded.copy()
            hasher.update(encoded)
            unit = (int.from_bytes(hasher.digest(), "big") + 0.5) / _SCALE  # in (0, 1)
            score = weight / -math.log(unit)
            if score > best_score:
                best, best_score = version, score
        return best

    def shadows_for(self, primary: str) -> list[str]:
        """The shadow versions one request is copied to (drawn by their percentages)."""
        picked = []
        for version, percent in self.shadow:
            if version != primary and random.random() * 100.0 < percent:
                picked.append(version)
        return picked


def _parse_shadow(value: Any) -> list[tuple[str, float]]:
    if not isinstance(value, Mapping):
        raise InvalidSplit(SHADOW_KEY, f"expected an object of percentages, got {value!r}")
    shadow = []
    for version, percent in value.items():
        key = f"{SHADOW_KEY}.{version}"
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidSplit(key, f"percentage must be a number, got {percent!r}")
        if not 0 <= percent <= 100:
            raise InvalidSplit(key, f"percentage must be from 0 to 100, got {percent}")
        shadow.append((str(version), float(percent)))
    return shadow


def _seeded(version: str) -> Any:
    """A hasher of (version, key) pairs, fed the version: stable across processes."""
    return hashlib.blake2b(version.encode() + b"\0", digest_size=8)
