"""Messages for a name that matches nothing: where the server looked, and the closest names.

A typo in an archive or model name should cost one read of the error, as a parameter typo
does (serve.api.params): the message names where the server looked and what it found.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

SHOWN = 10  # names listed at most; a store or registry may hold hundreds


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates that look most like `name`, best first (difflib's ratio >= 0.6)."""
    return difflib.get_close_matches(name, list(candidates), n=n)


def unknown_model(name: str, registered: Iterable[str]) -> str:
    """TorchServe's `Model not found: NAME`, the closest registered names, and all of them."""
    names = sorted(registered)
    if not names:
        return f"Model not found: {name} (no model is registered)"
    near = closest(name, names)
    hint = f"; did you mean {either(near)}?" if near else ""
    return f"Model not found: {name}{hint} (registered: {listed(names)})"


def either(names: list[str]) -> str:
    """`'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def listed(names: list[str]) -> str:
    """The names, comma-separated, at most SHOWN of them."""
    if len(names) <= SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN])}, ... ({len(names)} in all)"
