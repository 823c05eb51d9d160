"""CPU time and resident memory of a process tree, from psutil (as TorchServe reads them).

psutil reads the same kernel counters the hand-written /proc reader did before (utime + stime,
the resident pages of statm), so figures stay comparable with earlier runs, and it also works
where there is no /proc.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (none when it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except _GONE:
        return []


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except _GONE:
        return [pid]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (0 when it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except _GONE:
        return 0.0
    return float(times.user + times.system)


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except _GONE:
        return 0


def command(pid: int) -> str:
    """The process's command line, space-separated."""
    try:
        return " ".join(psutil.Process(pid).cmdline()).strip()
    except _GONE:
        return ""


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds and RSS of a process tree at one moment."""

    cpu: float
    rss: int


def usage(pids: list[int]) -> Usage:
    """Summed over `pids`."""
    return Usage(sum(cpu_seconds(p) for p in pids), sum(rss_bytes(p) for p in pids))


class Sampler:
    """Samples a tree's RSS in the background; `peak` is the largest sum seen."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        self._roots = roots
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _pids(self) -> list[int]:
        return [p for root in self._roots for p in tree(root)]

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, usage(self._pids()).rss)

    def __enter__(self) -> Sampler:
        self.peak = usage(self._pids()).rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, usage(self._pids()).rss)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until `pid` no longer exists (or is a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.AccessDenied:
            pass
        time.sleep(0.05)
    return False
