"""Loads the model runtime (torch) before the server starts serving, and settles the heap.

Importing torch holds the GIL for long stretches (shared-library initialization): done in an
executor thread while requests are being served, it would stall the event loop for hundreds
of milliseconds. Importing it once at start, before any listener is bound, costs the same
time and stalls nobody.

Start-up makes ~200k long-lived objects (torch and the server's modules). Each full garbage
collection on the way rescans all made so far (three of them, 0.15-0.18 s of every start on a
2-core VM) to find a few dozen garbage objects; so full collections wait until start-up is
over, when the heap is frozen (never scanned again) and Python's thresholds come back.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)

_NEVER = 2**30  # young collections in between: a full one waits on this many
_deferred: tuple[int, int, int] | None = None


def defer_full_collections() -> None:
    """Run no full collection until `freeze_startup_heap` (young ones still run)."""
    global _deferred
    if _deferred is None:
        _deferred = gc.get_threshold()
        gc.set_threshold(_deferred[0], _deferred[1], _NEVER)


def preload() -> None:
    """Import torch now (in the calling thread)."""
    started = time.monotonic()
    try:
        import torch  # noqa: F401
    except ImportError:
        logger.warning("torch is not installed: only handlers that do not use it can load")
        return
    logger.info("torch loaded in %.2fs", time.monotonic() - started)


def freeze_startup_heap() -> None:
    """Freeze what start-up made and restore the collection thresholds.

    torch's long-lived objects made every full collection stall the loop ~0.1-0.3 s; frozen,
    they are never scanned again. No collection first: it took ~0.1 s to find a few dozen
    garbage objects, which stay frozen (a few KB).
    """
    global _deferred
    gc.freeze()
    if _deferred is not None:
        gc.set_threshold(*_deferred)
        _deferred = None
