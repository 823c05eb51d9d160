"""Whole numbers written as JSON ints, as TorchServe writes them."""

from __future__ import annotations

# past 2**53 a float no longer holds every integer, and JSON readers parse ints into doubles
_EXACT = 2**53


def whole_number(value: float) -> int | float:
    """`value` as an int when it is whole and within 2**53, else as it is."""
    return int(value) if float(value).is_integer() and abs(value) < _EXACT else value
