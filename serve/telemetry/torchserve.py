"""TorchServe's frontend and host metrics under their own names, for dashboards built on them.

- `Requests2XX`, `Requests4XX`, `Requests5XX`: responses of the inference and management APIs
  by status class (counters).
- `QueueTime` (the last request's queue time) and `WorkerLoadTime` (per executor, start to
  loaded), in milliseconds.
- The host: `CPUUtilization`, `MemoryUtilization`, `MemoryUsed`, `MemoryAvailable`,
  `DiskUsage`, `DiskAvailable`, `DiskUtilization` (from psutil, the library TorchServe reads
  them with, at scrape time, for the root filesystem; CPU since the previous scrape), and per
  GPU `GPUMemoryUtilization`, `GPUMemoryUsed`, `GPUUtilization` (NVML; absent without GPUs).

Labels and HELP texts are TorchServe's (`Level="Host"`, `Hostname`, `WorkerName`, `DeviceId`).
- TorchServe's three `ts_*` counters (`TsCounters`; `model_version` is "default" when the
  request named no version, as in TorchServe).

Rendered by hand so the names carry no suffix (prometheus_client appends `_total`). The host
figures are read by serve.telemetry.host.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

from serve.telemetry.host import HostFigures
from serve.telemetry.log_files import TS_METRICS, metric_line

HOSTNAME = socket.gethostname()
_CLASSES = ("Requests2XX", "Requests4XX", "Requests5XX")
_HOST_LEVEL = (("Level", "Host"),)
_ts_metrics_log = logging.getLogger(TS_METRICS)


def escape(value: str) -> str:
    """A Prometheus label value, escaped (backslash, newline, double quote)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class StatusCounts:
    """Responses by status class; `add` is on the request path, so it is one increment."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0, 0, 0]  # 2XX, 4XX, 5XX

    def add(self, status: int) -> None:
        """Count one response (1XX and 3XX are not counted, as in TorchServe)."""
        if 200 <= status < 300:
            index = 0
        elif 400 <= status < 500:
            index = 1
        elif status >= 500:
            index = 2
        else:
            return
        self.counts[index] += 1
        if _ts_metrics_log.isEnabledFor(logging.INFO):  # ts_metrics.log (serve.telemetry.log_files)
            _ts_metrics_log.info("%s", metric_line(_CLASSES[index], "Count", 1.0, _HOST_LEVEL))


class TsCounters:
    """TorchServe's three counters, rendered by hand so their names match exactly.

    prometheus_client appends `_total` to every counter; TorchServe exposes
    `ts_inference_latency_microseconds` and `ts_queue_latency_microseconds` without it.
    """

    NAMES = (
        ("ts_inference_requests_total", "Count"),
        ("ts_inference_latency_microseconds", "Microseconds"),
        ("ts_queue_latency_microseconds", "Microseconds"),
    )

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[str, str], list[float]]] = {n: {} for n, _ in self.NAMES}

    def cell(self, name: str, model: str, version: str) -> list[float]:
        """A one-element list to add to (kept by callers, so no lookup per request)."""
        series = self.values[name]
        cell = series.get((model, version))
        if cell is None:
            cell = series[(model, version)] = [0.0]
        return cell

    def render(self, names: Sequence[str] = ()) -> bytes:
        """The text exposition of the three counters (only `names` when given)."""
        lines: list[str] = []
        for name, unit in self.NAMES:
            if names and name not in names:
                continue
            lines.append(f"# HELP {name} Torchserve prometheus counter metric with unit: {unit}")
            lines.append(f"# TYPE {name} counter")
            for (model, version), cell in sorted(self.values[name].items()):
                labels = (
                    f'model_name="{escape(model)}",model_version="{escape(version)}",'
                    f'hostname="{escape(HOSTNAME)}"'
                )
                lines.append(f"{name}{{{labels}}} {cell[0]!r}")
        return ("\n".join(lines) + "\n").encode() if lines else b""


# --- rendering --------------------------------------------------------------------------------


def render(
    statuses: StatusCounts,
    queue_time_ms: float | None,
    worker_loads: Sequence[tuple[str, float]],
    host: HostFigures | None,
    names: Sequence[str] = (),
) -> bytes:
    """The text exposition of these metrics (only `names` when given)."""
    host_label = f'Level="Host",Hostname="{escape(HOSTNAME)}"'
    out: list[str] = []

    def family(name: str, kind: str, unit: str, samples: list[tuple[str, float]]) -> None:
        if (names and name not in names) or not samples:
            return
        out.append(f"# HELP {name} Torchserve prometheus {kind} metric with unit: {unit}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{{{labels}}} {float(value)!r}" for labels, value in samples)

    classes = ("Requests2XX", "Requests4XX", "Requests5XX")
    for name, count in zip(classes, statuses.counts, strict=True):
        family(name, "counter", "Count", [(host_label, count)])
    if queue_time_ms is not None:
        family("QueueTime", "gauge", "Milliseconds", [(host_label, queue_time_ms)])
    family(
        "WorkerLoadTime",
        "gauge",
        "Milliseconds",
        [(f'WorkerName="{escape(w)}",{host_label}', ms) for w, ms in worker_loads],
    )
    if host is not None:
        if host.cpu_percent is not None:
            family("CPUUtilization", "gauge", "Percent", [(host_label, host.cpu_percent)])
        if host.memory is not None:
            memory = host.memory
            family("MemoryUsed", "gauge", "Megabytes", [(host_label, memory.used_mb)])
            family("MemoryAvailable", "gauge", "Megabytes", [(host_label, memory.available_mb)])
            family("MemoryUtilization", "gauge", "Percent", [(host_label, memory.percent)])
        if host.disk is not None:
            disk = host.disk
            family("DiskUsage", "gauge", "Gigabytes", [(host_label, disk.used_gb)])
            family("DiskAvailable", "gauge", "Gigabytes", [(host_label, disk.available_gb)])
            family("DiskUtilization", "gauge", "Percent", [(host_label, disk.percent)])
        gpu_labels = [
            (f'Level="Host",DeviceId="{g.device_id}",Hostname="{escape(HOSTNAME)}"', g)
            for g in host.gpus
        ]
        family(
            "GPUMemoryUtilization",
            "gauge",
            "Percent",
            [(lb, g.memory_percent) for lb, g in gpu_labels],
        )
        family(
            "GPUMemoryUsed", "gauge", "Megabytes", [(lb, g.memory_used_mb) for lb, g in gpu_labels]
        )
        family(
            "GPUUtilization",
            "gauge",
            "Percent",
            [(lb, g.utilization_percent) for lb, g in gpu_labels],
        )
    return ("\n".join(out) + "\n").encode() if out else b""
