"""TorchServe's periodic system metrics, as lines of ts_metrics.log (metrics_mode log, legacy).

TorchServe runs its metric collector when it starts and then every `metric_time_interval`
seconds (60), unless `disable_system_metrics`; each figure becomes one ts_metrics.log line,
`CPUUtilization.Percent:12.5|#Level:Host|#hostname:<h>,timestamp:<s>`, a GPU's with
`Level:Host,DeviceId:<n>`. With a metrics.yaml only the names its `ts_metrics` declare are
written, in their declared units (serve.telemetry.torchserve.FrontendLog). The figures are
the ones /metrics shows (serve.telemetry.host), read off the event loop; a host without a GPU
(or without NVML) has no GPU lines.
"""

from __future__ import annotations

import asyncio
import logging

from serve.telemetry.host import HostFigures, HostReader
from serve.telemetry.torchserve import FrontendLog

logger = logging.getLogger(__name__)

_HOST = "Level:Host"


def lines(figures: HostFigures) -> list[tuple[str, str, str, float]]:
    """(name, unit, dimensions, value) of each figure, in TorchServe's names and units."""
    out: list[tuple[str, str, str, float]] = []
    if figures.cpu_percent is not None:
        out.append(("CPUUtilization", "Percent", _HOST, figures.cpu_percent))
    if figures.memory is not None:
        memory = figures.memory
        out.append(("MemoryUsed", "Megabytes", _HOST, memory.used_mb))
        out.append(("MemoryAvailable", "Megabytes", _HOST, memory.available_mb))
        out.append(("MemoryUtilization", "Percent", _HOST, memory.percent))
    if figures.disk is not None:
        disk = figures.disk
        out.append(("DiskUsage", "Gigabytes", _HOST, disk.used_gb))
        out.append(("DiskUtilization", "Percent", _HOST, disk.percent))
        out.append(("DiskAvailable", "Gigabytes", _HOST, disk.available_gb))
    for gpu in figures.gpus:
        device = f"{_HOST},DeviceId:{gpu.device_id}"
        out.append(("GPUMemoryUtilization", "Percent", device, gpu.memory_percent))
        out.append(("GPUMemoryUsed", "Megabytes", device, gpu.memory_used_mb))
        out.append(("GPUUtilization", "Percent", device, gpu.utilization_percent))
    return out


async def log_periodically(log: FrontendLog, host: HostReader, interval: float) -> None:
    """Write the figures now, then every `interval` seconds, until cancelled."""
    while True:
        try:
            figures = await asyncio.to_thread(host.read)
        except Exception:  # a reader bug must not end the task: the next round tries again
            logger.exception("Reading the host's figures for ts_metrics.log failed")
        else:
            for name, unit, dimensions, value in lines(figures):
                log.emit(name, unit, dimensions, value)
        await asyncio.sleep(interval)  # a timer, not a synchronisation
