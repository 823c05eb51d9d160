"""Checking an answer against the expected one (no torch here: the load client imports it)."""

from __future__ import annotations

import math
from typing import Any

# Batching changes float summation order; answers may differ in the last digits.
REL_TOLERANCE = 1e-3
ABS_TOLERANCE = 1e-5


def matches(answer: Any, expected: Any) -> bool:
    """True when a parsed response equals the expected answer, within float rounding.

    An Open Inference Protocol response (one row) is read as {output name: its value}.
    """
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), list):
        answer = {o.get("name"): (o.get("data") or [None])[0] for o in answer["outputs"]}
    if isinstance(expected, dict):
        return (
            isinstance(answer, dict)
            and answer.get("class") == expected["class"]
            and _close(answer.get("score"), expected["score"])
        )
    if isinstance(expected, list):
        return (
            isinstance(answer, list)
            and len(answer) == len(expected)
            and all(_close(a, e) for a, e in zip(answer, expected, strict=True))
        )
    return bool(answer == expected)


def _close(value: Any, expected: float) -> bool:
    return isinstance(value, int | float) and math.isclose(
        value, expected, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE
    )
