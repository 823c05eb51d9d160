"""Request parameters of the model APIs, validated the same way for REST and gRPC.

REST passes query strings or JSON values, gRPC passes proto fields that were set; either way
every bad value is a 400 (gRPC INVALID_ARGUMENT) that names the parameter.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from serve.errors import BadRequest


def int_param(
    params: Mapping[str, Any], name: str, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """An optional integer parameter, within [minimum, maximum] where those are given."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        # a JSON 1.5 is refused, not truncated (TorchServe's Gson refuses it too; 2.0 passes)
        raise BadRequest(f"Parameter {name} must be an integer, got {_shown(raw)}")
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"Parameter {name} must be an integer, got {_shown(raw)}") from None
    allowed = "" if minimum is None or maximum is None else f" (from {minimum} to {maximum})"
    if minimum is not None and value < minimum:
        raise BadRequest(
            f"Parameter {name} must be at least {minimum}{allowed}, got {_shown(value)}"
        )
    if maximum is not None and value > maximum:
        raise BadRequest(
            f"Parameter {name} must be at most {maximum}{allowed}, got {_shown(value)}"
        )
    return value


def float_param(
    params: Mapping[str, Any], name: str, minimum: float, maximum: float | None = None
) -> float | None:
    """An optional finite number parameter, greater than minimum and at most maximum."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"Parameter {name} must be a number, got {_shown(raw)}") from None
    too_big = maximum is not None and not value <= maximum
    if isinstance(raw, bool) or not math.isfinite(value) or not value > minimum or too_big:
        allowed = f"greater than {minimum:g}"
        if maximum is not None:
            allowed += f" and at most {int(maximum) if float(maximum).is_integer() else maximum}"
        raise BadRequest(f"Parameter {name} must be {allowed}, got {_shown(raw)}")
    return value


def _shown(raw: Any, limit: int = 40) -> str:
    """A bad value as an error message quotes it: shortened, so a huge one stays readable."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def bool_param(params: Mapping[str, Any], name: str, default: bool) -> bool:
    """An optional true/false parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadRequest(f"Parameter {name} must be true or false, got {raw!r}")


def str_param(params: Mapping[str, Any], name: str) -> str | None:
    """An optional string parameter."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"Parameter {name} must be a string, got {raw!r}")
    return raw


def check_known(params: Mapping[str, Any], known: frozenset[str]) -> None:
    """Refuse unknown parameter names (usually a typo), suggesting the closest one."""
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BadRequest(f"Unknown parameter {name!r}{hint}")
