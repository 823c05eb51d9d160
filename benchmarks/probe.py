"""Is the machine giving us all its cores right now? A short fixed-work probe on every core.

On a shared or virtual machine other tenants can take CPU time that this machine's /proc does
not show (no steal time is reported). The probe runs the same pure-Python loop on each core at
once, in worker processes kept for the whole run, and compares the slowest core's time with the
best time seen so far: a speed of 1.0 means uncontended, 0.5 means half the CPU was missing.
The harness probes right before and after each measured run, while the server is idle, and
repeats runs that were contended.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from multiprocessing.pool import Pool

LOOP = 150_000  # about 5 ms on a current core
CALIBRATION_ROUNDS = 40


def _work(_: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(LOOP):
        total += i
    return time.perf_counter() - start


class Probe:
    """Measures how much of the machine's CPU is ours (1.0: all of it)."""

    def __init__(self, cores: int | None = None) -> None:
        self._cores = cores or len(os.sched_getaffinity(0))
        self._pool: Pool | None = None
        self._best = float("inf")

    def speed(self, rounds: int = 5) -> float:
        """The median over `rounds` of best time / this time for the slowest core."""
        if self._pool is None:
            self._pool = multiprocessing.get_context("forkserver").Pool(self._cores)
            self._pool.map(_work, range(self._cores * 4))  # warm up
            for _ in range(CALIBRATION_ROUNDS):  # find the uncontended time
                self._best = min(self._best, max(self._pool.map(_work, range(self._cores), 1)))
        times = []
        for _ in range(rounds):
            slowest = max(self._pool.map(_work, range(self._cores), chunksize=1))
            self._best = min(self._best, slowest)
            times.append(slowest)
        return self._best / statistics.median(times)

    def wait_full_speed(self, limit: float, threshold: float = 0.8) -> float:
        """Wait up to `limit` seconds for speed ≥ threshold; returns the last speed seen."""
        deadline = time.monotonic() + limit
        while True:
            speed = self.speed()
            if speed >= threshold or time.monotonic() >= deadline:
                return speed
            time.sleep(0.25)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
