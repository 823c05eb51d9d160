"""The host's figures at scrape time: CPU, memory and disk from psutil, GPUs from NVML.

psutil is the library TorchServe reads them with (the root filesystem for the disk; CPU since
the previous read). `CUDA_VISIBLE_DEVICES` is parsed here once, for the GPU figures and for
the GPU count the executors are placed by (`serve.workers.devices`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024
GB = 1024 * MB


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """One GPU's memory and utilization."""

    device_id: int
    memory_percent: float
    memory_used_mb: float
    utilization_percent: float


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """The host's memory, as TorchServe reports it."""

    used_mb: float
    available_mb: float
    percent: float  # of the memory not available


@dataclass(frozen=True, slots=True)
class DiskFigures:
    """The root filesystem's usage."""

    used_gb: float
    available_gb: float
    percent: float


@dataclass(frozen=True, slots=True)
class HostFigures:
    """The host's CPU, memory, disk and GPUs at one scrape (None: not readable here)."""

    cpu_percent: float | None = None
    memory: MemoryFigures | None = None
    disk: DiskFigures | None = None
    gpus: tuple[GpuFigures, ...] = field(default=())


class HostReader:
    """Reads the host figures; CPU utilization is measured since the previous read."""

    def __init__(self, gpu_count: int) -> None:
        self._gpu_count = gpu_count
        self._lock = threading.Lock()
        self._last_cpu: tuple[float, float] | None = None

    def read(self) -> HostFigures:
        """The figures now (blocking file reads and NVML calls: call it off the event loop)."""
        return HostFigures(self._cpu(), _memory(), _disk(), _gpus(self._gpu_count))

    def _cpu(self) -> float | None:
        try:
            times = psutil.cpu_times()
        except (OSError, RuntimeError):
            return None
        idle = times.idle + getattr(times, "iowait", 0.0)
        total = sum(times)
        with self._lock:
            last, self._last_cpu = self._last_cpu, (idle, total)
        if last is not None:
            idle, total = idle - last[0], total - last[1]
        return round(100.0 * (1 - idle / total), 1) if total > 0 else 0.0


def visible_devices() -> tuple[str, ...] | None:
    """`CUDA_VISIBLE_DEVICES`' entries, stripped, blanks dropped (None: unset, all visible)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return tuple(e.strip() for e in visible.split(",") if e.strip())


def _memory() -> MemoryFigures | None:
    """psutil's figures, as TorchServe's: used MB, available MB, percent not available."""
    try:
        memory = psutil.virtual_memory()
    except (OSError, RuntimeError):
        return None
    return MemoryFigures(memory.used / MB, memory.available / MB, round(memory.percent, 1))


def _disk() -> DiskFigures | None:
    try:
        usage = psutil.disk_usage("/")
    except OSError:
        return None
    return DiskFigures(usage.used / GB, usage.free / GB, round(usage.percent, 1))


def _gpus(count: int) -> tuple[GpuFigures, ...]:
    """Each visible GPU (CUDA ordinal as DeviceId); nothing when NVML cannot tell."""
    if count <= 0:
        return ()
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver or library: no GPU figures
        return ()
    try:
        figures = []
        for ordinal, index in enumerate(_physical_indices(count)):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            figures.append(
                GpuFigures(
                    device_id=ordinal,
                    memory_percent=round(100.0 * memory.used / memory.total, 1),
                    memory_used_mb=memory.used / MB,
                    utilization_percent=float(rates.gpu),
                )
            )
        return tuple(figures)
    except Exception:
        return ()
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _physical_indices(count: int) -> list[int]:
    """NVML indices of the CUDA ordinals 0..count-1 (CUDA_VISIBLE_DEVICES as numbers)."""
    entries = visible_devices()
    if entries and all(e.isdigit() for e in entries):
        return [int(e) for e in entries[:count]]
    return list(range(count))
