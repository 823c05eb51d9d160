"""How many intra-op threads each executor gives torch.

Rule: `torch_num_threads` when configured (> 0); otherwise the usable cores divided by the
number of executors in the process, at least 1. Several executors then share the cores instead
of each starting a full OpenMP pool and oversubscribing them. Executors pick up a new value
before their next batch when the count of executors changes.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ThreadBudget:
    """The current intra-op thread count per executor (updated on the event loop)."""

    def __init__(self, configured: int = 0, cores: int | None = None) -> None:
        self._configured = configured
        self._cores = cores or usable_cores()
        self._executors = 0
        self.per_executor = self._compute()

    def add(self) -> None:
        """One more executor."""
        self._executors += 1
        self.per_executor = self._compute()

    def remove(self) -> None:
        """One executor fewer."""
        self._executors = max(0, self._executors - 1)
        self.per_executor = self._compute()

    def _compute(self) -> int:
        if self._configured > 0:
            return self._configured
        return max(1, self._cores // max(1, self._executors))
