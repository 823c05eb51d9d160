"""How many intra-op threads each executor gives torch.

Rule: `torch_num_threads` when configured (> 0). Otherwise the usable cores divided by the
number of executors in the process, at least 1, so several executors share the cores instead
of each starting a full OpenMP pool and oversubscribing them; and 1 thread while an executor's
batches are short (under SHORT_BATCH on average), because a forward that short gains nothing
from splitting, while the OpenMP pool spins a core after every call, the core the event loop
needs. It returns to the shared count when batches on one thread grow past LONG_BATCH.
An executor under a step scheduler (a generative model) leaves one core of the machine to
everything else: its steps run back to back, so whenever another thread or process takes a
core, an OpenMP pool spanning every core stalls at each barrier. Measured on 2 cores with two
`nice 19` busy loops beside it, SmolLM2 under 16 streams fell from 75 to 3 tokens/s with 2
threads and kept 59 with 1 (72 with 1 on the quiet machine). Executors apply a new value
before their next batch.
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

    @property
    def cores(self) -> int:
        """Cores this process may run on."""
        return self._cores

    @property
    def configured(self) -> bool:
        """True when the operator fixed the count (torch_num_threads)."""
        return self._configured > 0

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


SHORT_BATCH = 0.002
LONG_BATCH = 0.008


class ExecutorThreads:
    """The intra-op thread count of one executor: its share of the budget, or 1 while short;
    `steps`: a step scheduler's executor, which leaves one core of the machine free."""

    def __init__(self, budget: ThreadBudget, weight: float = 0.2, *, steps: bool = False) -> None:
        self._budget = budget
        self._weight = weight
        self._steps = steps
        self._average: float | None = None
        self.short = False

    def current(self) -> int:
        """The count to use for the next batch."""
        budget = self._budget
        if budget.configured:
            return budget.per_executor
        if self.short:
            return 1
        if self._steps:
            return max(1, min(budget.per_executor, budget.cores - 1))
        return budget.per_executor

    def observe(self, seconds: float) -> None:
        """One batch took `seconds` with the current count."""
        average = self._average
        average = seconds if average is None else average + self._weight * (seconds - average)
        self._average = average
        if not self.short and average < SHORT_BATCH:
            self.short = True
        elif self.short and average > LONG_BATCH:
            self.short = False
