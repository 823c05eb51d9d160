"""Restoring the model versions of a snapshot (`model_snapshot`) at start, never fatally."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from serve.config import Config, SnapshotVersion
from serve.errors import ServeError
from serve.models.registry import RegisterParams, Registry
from serve.models.version import ModelVersion

logger = logging.getLogger(__name__)


def snapshot_models(config: Config) -> list[tuple[str, str, RegisterParams]]:
    """(model, version, registration) for each version `model_snapshot` holds."""
    entries = []
    for name, versions in config.model_snapshot.items():
        for version, saved in versions.items():
            s = saved.settings
            params = RegisterParams(
                url=saved.mar_name,
                model_name=name,
                batch_size=s.batch_size,
                max_batch_delay=s.max_batch_delay,
                initial_workers=s.min_workers,
                max_workers=s.max_workers,
                response_timeout=s.response_timeout,
                synchronous=False,
                defer_workers=True,  # the executors load once the listeners are bound
                loaded_at_startup=True,
                make_default=bool(s.default_version),
            )
            entries.append((name, version, params))
    return entries


@dataclass(frozen=True, slots=True)
class Restore:
    """What a restore registered (workers not started yet) and what it could not."""

    versions: list[ModelVersion] = field(default_factory=list)
    # (model, version) → its snapshot entry, for the versions that failed
    failed: dict[tuple[str, str], SnapshotVersion] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)


async def restore(registry: Registry, config: Config) -> Restore:
    """Register the snapshot's versions; one that fails is logged and the others still load.

    The workers are left to the caller (`Registry.start_workers`), once the listeners are up.
    """
    outcome = Restore()
    for name, version, params in snapshot_models(config):
        try:
            result = await registry.register(params)
        except ServeError as exc:
            logger.error(
                "Cannot restore model %s/%s from %s: %s", name, version, params.url, exc.message
            )
            outcome.failed[name, version] = config.model_snapshot[name][version]
            outcome.reasons[name, version] = f"{params.url}: {exc.message}"
            continue
        outcome.versions.append(result.version)
        if result.version.version != version:
            logger.warning(
                "Restored model %s/%s from %s as version %s: the archive has changed",
                name,
                version,
                params.url,
                result.version.version,
            )
    return outcome
