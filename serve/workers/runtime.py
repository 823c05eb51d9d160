"""Loads the model runtime (torch) before the server starts serving.

Importing torch holds the GIL for long stretches (shared-library initialization): done in an
executor thread while requests are being served, it would stall the event loop for hundreds
of milliseconds. Importing it once at start, before any listener is bound, costs the same
time and stalls nobody.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


def preload() -> None:
    """Import torch now (in the calling thread)."""
    started = time.monotonic()
    try:
        import torch  # noqa: F401
    except ImportError:
        logger.warning("torch is not installed: only handlers that do not use it can load")
        return
    logger.info("torch loaded in %.2fs", time.monotonic() - started)
