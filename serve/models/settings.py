"""The effective settings of a model version: which source wins, key by key.

Sources, first to last: the registration request, the operator's `models:` section of
serve.yaml, the archive's model-config.yaml, server defaults. Worker counts are the
exception, as in TorchServe 0.12: an archive's minWorkers/maxWorkers pair (min > 0,
max >= min) wins over the request's `initial_workers`; the operator's `models:` section still
wins over both. Devices come from the operator's `devices`, else the archive's deviceType and
deviceIds (ids past the GPUs here are ignored), else every GPU; without GPUs, the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serve.config import Config, ModelSettings
from serve.models.archive import ArchiveSettings
from serve.models.version import VersionSettings

if TYPE_CHECKING:
    from serve.models.registry import RegisterParams


def effective_settings(
    params: RegisterParams,
    operator: ModelSettings,
    archive: ArchiveSettings,
    config: Config,
    gpu_count: int,
) -> VersionSettings:
    """A version's settings from the request, the operator, the archive and the defaults."""
    devices = _devices(operator.devices, archive.device_type, archive.device_ids, gpu_count)
    archive_pair = (
        archive.min_workers is not None
        and archive.min_workers > 0
        and (archive.max_workers is None or archive.max_workers >= archive.min_workers)
    )
    min_workers = _first(
        operator.min_workers,
        archive.min_workers if archive_pair else None,
        params.initial_workers,
        _default_workers(config, gpu_count),
    )
    max_workers = max(
        min_workers,
        _first(
            params.max_workers,
            operator.max_workers,
            archive.max_workers if archive_pair else None,
            min_workers,
        ),
    )
    return VersionSettings(
        batch_size=_first(params.batch_size, operator.batch_size, archive.batch_size, 1),
        max_batch_delay=_first(
            params.max_batch_delay, operator.max_batch_delay, archive.max_batch_delay, 100
        ),
        min_workers=min_workers,
        max_workers=max_workers,
        response_timeout=_first(
            params.response_timeout,
            operator.response_timeout,
            archive.response_timeout,
            config.default_response_timeout,
        ),
        job_queue_size=_first(archive.job_queue_size, config.job_queue_size),
        devices=devices,
        device_type="cpu" if devices == (None,) else "gpu",
        adaptive_batching=config.adaptive_batching,
        # TorchServe: the archive's startupTimeout when set, else the register parameter,
        # else default_startup_timeout
        startup_timeout=_first(
            archive.startup_timeout, params.startup_timeout, config.default_startup_timeout
        ),
        sequence=archive.sequence,
    )


def _default_workers(config: Config, gpu_count: int) -> int:
    """Workers when no source names a count: the server's setting, else one per GPU, else 1."""
    if config.default_workers_per_model > 0:
        return config.default_workers_per_model
    return gpu_count or 1


def _devices(
    configured: tuple[int, ...] | None,
    device_type: str | None,
    device_ids: tuple[int, ...] | None,
    gpu_count: int,
) -> tuple[int | None, ...]:
    """The devices the version's executors take turns on (None: the CPU)."""
    if configured:
        return configured
    if device_type == "cpu" or gpu_count == 0:
        return (None,)
    if device_ids and all(0 <= d < gpu_count for d in device_ids):
        return device_ids
    return tuple(range(gpu_count))


def _first(*values: Any) -> Any:
    """The first value that is set (the last candidate is always a default)."""
    return next(value for value in values if value is not None)
