"""GPU discovery without torch, and the round-robin that hands devices to executors.

The GPU count comes from NVML (`nvidia-ml-py`), limited by `CUDA_VISIBLE_DEVICES` and the
`number_of_gpu` setting; with no driver or no GPU the count is 0 and executors run on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence

from serve.telemetry.host import visible_devices

logger = logging.getLogger(__name__)


def visible_gpu_count(limit: int | None = None) -> int:
    """How many GPUs this process may use (0 without a driver)."""
    count = _nvml_count()
    visible = visible_devices()
    if visible is not None:
        count = min(count, len([e for e in visible if e != "-1"]))
    if limit is not None:
        count = min(count, limit)
    return count


def _nvml_count() -> int:
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no library: a CPU machine
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        logger.warning("NVML is present but could not count GPUs; using the CPU", exc_info=True)
        return 0
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def pick_device(devices: Sequence[int | None], in_use: Iterable[int | None]) -> int | None:
    """The least-used device, earliest in the list on a tie: round-robin from the first."""
    if not devices:
        return None
    load = Counter(in_use)
    index = min(range(len(devices)), key=lambda i: (load[devices[i]], i))
    return devices[index]
