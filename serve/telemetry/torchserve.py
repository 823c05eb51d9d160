"""TorchServe's frontend and host metrics under their own names, for dashboards built on them.

- `Requests2XX`, `Requests4XX`, `Requests5XX`: responses of the inference and management APIs
  by status class (counters).
- `QueueTime` (the last request's queue time), `WorkerThreadTime` (the last batch's time in
  its executor outside the handler: building the handler's inputs, reading its outputs) and
  `WorkerLoadTime` (per executor, start to loaded), in milliseconds.
- The host: `CPUUtilization`, `MemoryUtilization`, `MemoryUsed`, `MemoryAvailable`,
  `DiskUsage`, `DiskAvailable`, `DiskUtilization`, and per GPU `GPUMemoryUtilization`,
  `GPUMemoryUsed`, `GPUUtilization` (absent without GPUs), from the figures `telemetry.host`
  reads at scrape time.

Labels and HELP texts are TorchServe's (`Level="Host"`, `Hostname`, `WorkerName`, `DeviceId`).
Rendered by hand, like the `ts_*` counters, so the names carry no suffix. With a metrics.yaml
(`metrics_config`) only its `ts_metrics` are rendered, with their declared units, and each
declared family is listed even without a value (a GPU gauge on a host with no GPU), as
TorchServe lists them.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Collection, Mapping, Sequence

from serve.config.metrics import MetricDecl
from serve.telemetry.host import HostFigures

HOSTNAME = socket.gethostname()
_CLASSES = ("Requests2XX", "Requests4XX", "Requests5XX")
ts_metrics_log = logging.getLogger("TS_METRICS")  # TorchServe's log4j logger name


class FrontendLog:
    """`metrics_mode: log|legacy`: frontend metrics as TorchServe's ts_metrics.log lines.

    `Requests2XX.Count:1.0|#Level:Host|#hostname:<h>,timestamp:<s>`; only declared metrics
    when a metrics.yaml declares them.
    """

    def __init__(self, declared: Mapping[str, MetricDecl] | None) -> None:
        self._declared = declared

    def emit(self, name: str, unit: str, dimensions: str, value: float) -> None:
        """Log one value; `dimensions` is `Name:value,...` without the hostname."""
        if self._declared is not None:
            decl = self._declared.get(name)
            if decl is None:
                return
            unit = decl.unit
        ts_metrics_log.info(
            "%s.%s:%r|#%s|#hostname:%s,timestamp:%d",
            name, unit, float(value), dimensions, HOSTNAME, int(time.time()),
        )  # fmt: skip


class StatusCounts:
    """Responses by status class; `add` is on the request path, so it is one increment."""

    __slots__ = ("counts", "log")

    def __init__(self, log: FrontendLog | None = None) -> None:
        self.counts = [0, 0, 0]  # 2XX, 4XX, 5XX
        self.log = log

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
        if self.log is not None:
            self.log.emit(_CLASSES[index], "Count", "Level:Host", 1.0)


# --- rendering --------------------------------------------------------------------------------


# every frontend metric this module renders (a handler metric may not take these names)
NAMES = frozenset(
    {
        "Requests2XX", "Requests4XX", "Requests5XX", "QueueTime", "WorkerThreadTime",
        "WorkerLoadTime", "CPUUtilization", "MemoryUsed", "MemoryAvailable", "MemoryUtilization",
        "DiskUsage", "DiskAvailable", "DiskUtilization", "GPUMemoryUtilization", "GPUMemoryUsed",
        "GPUUtilization",
    }
)  # fmt: skip


def render(
    statuses: StatusCounts,
    queue_time_ms: float | None,
    worker_loads: Sequence[tuple[str, float]],
    host: HostFigures | None,
    names: Sequence[str] = (),
    *,
    worker_thread_ms: float | None = None,
    declared: Mapping[str, MetricDecl] | None = None,
    rendered_elsewhere: Collection[str] = (),
) -> bytes:
    """The text exposition of these metrics (only `names` when given).

    `declared`: metrics.yaml's ts_metrics; then only those are rendered, each at least with its
    HELP and TYPE lines (`rendered_elsewhere` names the declared ones another module renders).
    """
    host_label = f'Level="Host",Hostname="{_escape(HOSTNAME)}"'
    out: list[str] = []
    listed: set[str] = set()

    def header(name: str, kind: str, unit: str) -> None:
        listed.add(name)
        out.append(f"# HELP {name} Torchserve prometheus {kind} metric with unit: {unit}")
        out.append(f"# TYPE {name} {kind}")

    def family(name: str, kind: str, unit: str, samples: list[tuple[str, float]]) -> None:
        if names and name not in names:
            return
        if declared is not None:
            if name not in declared:
                return
            unit = declared[name].unit
        elif not samples:
            return
        header(name, kind, unit)
        out.extend(f"{name}{{{labels}}} {float(value)!r}" for labels, value in samples)

    for name, count in zip(_CLASSES, statuses.counts, strict=True):
        family(name, "counter", "Count", [(host_label, count)])
    if queue_time_ms is not None:
        family("QueueTime", "gauge", "Milliseconds", [(host_label, queue_time_ms)])
    if worker_thread_ms is not None:
        family("WorkerThreadTime", "gauge", "Milliseconds", [(host_label, worker_thread_ms)])
    family(
        "WorkerLoadTime",
        "gauge",
        "Milliseconds",
        [(f'WorkerName="{_escape(w)}",{host_label}', ms) for w, ms in worker_loads],
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
            (f'Level="Host",DeviceId="{g.device_id}",Hostname="{_escape(HOSTNAME)}"', g)
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
    for name, decl in (declared or {}).items():
        if name not in listed and name not in rendered_elsewhere and (not names or name in names):
            header(name, decl.kind, decl.unit)
    return ("\n".join(out) + "\n").encode() if out else b""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
