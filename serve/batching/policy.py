"""The batching decision, kept apart from waiting: pure functions and small estimators.

`decide` answers one question when an executor is idle and requests are pending: take n now,
or wait s seconds. `max_batch_delay` stays the upper bound (TorchServe's contract, counted
from the oldest pending request so a burst cannot starve the first caller), but a batch is sent
early when waiting cannot fill it: when recent concurrency says no more requests are coming,
or the arrival rate says none will arrive before the delay runs out. A lone client therefore
never pays the delay, while batches still fill under load.
"""

from __future__ import annotations

from dataclasses import dataclass

# Below this many expected arrivals within the remaining delay, waiting is not worth it.
MIN_EXPECTED_ARRIVALS = 0.5


@dataclass(frozen=True, slots=True)
class Take:
    """Dispatch this many requests now."""

    count: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Check again after this many seconds (or when something changes)."""

    seconds: float


def decide(
    *,
    pending: int,
    oldest_age: float,
    batch_size: int,
    max_delay: float,
    gatherable: int,
    arrival_rate: float,
) -> Take | Wait:
    """Take or wait, for an idle executor facing `pending` (>0) queued requests.

    gatherable: how many requests recent concurrency says could be in this batch.
    arrival_rate: recent requests per second.
    """
    if pending >= batch_size:
        return Take(batch_size)
    remaining = max_delay - oldest_age
    if remaining <= 0:
        return Take(pending)
    if pending >= min(gatherable, batch_size):
        return Take(pending)
    if arrival_rate * remaining < MIN_EXPECTED_ARRIVALS:
        return Take(pending)
    return Wait(remaining)


class ConcurrencyWindow:
    """The most requests seen in the system at once (queued plus running) over a recent window.

    Two buckets of `window` seconds: the peak of the current one and of the one before, so the
    estimate forgets a burst after one to two windows.
    """

    def __init__(self, window: float = 1.0) -> None:
        self._window = window
        self._start = 0.0
        self._current = 0
        self._previous = 0

    def observe(self, in_system: int, now: float) -> None:
        """Record the number of requests in the system at `now`."""
        self._roll(now)
        if in_system > self._current:
            self._current = in_system

    def peak(self, now: float) -> int:
        """The largest count seen in the last one to two windows."""
        self._roll(now)
        return max(self._current, self._previous)

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed < self._window:
            return
        self._previous = self._current if elapsed < 2 * self._window else 0
        self._current = 0
        self._start = now


class ArrivalRate:
    """Requests per second, as an exponentially weighted average of inter-arrival gaps."""

    def __init__(self, weight: float = 0.1, max_gap: float = 1.0) -> None:
        self._weight = weight
        self._max_gap = max_gap
        self._last: float | None = None
        self._gap = max_gap

    def observe(self, now: float) -> None:
        """Record one arrival at `now`."""
        if self._last is not None:
            gap = min(now - self._last, self._max_gap)
            self._gap += self._weight * (gap - self._gap)
        self._last = now

    def rate(self, now: float) -> float:
        """Arrivals per second; decays when nothing has arrived for a while."""
        if self._last is None:
            return 0.0
        gap = max(self._gap, min(now - self._last, self._max_gap))
        return 1.0 / gap if gap > 0 else float("inf")
