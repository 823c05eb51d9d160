"""Liveness and readiness: one rule for every probe, readiness route and describe.

A version is ready when it has as many ready executors as its min_workers, and at least one
(`ModelVersion.ready`). The server is ready when every version that asks for workers is
ready: a version scaled to 0 on purpose serves nothing, and holds no probe back. Liveness
(TorchServe's /ping, gRPC Ping) asks a different question: whether every version has its
min_workers live (loading or ready) executors.
"""

from __future__ import annotations

from serve.models.registry import Registry
from serve.models.version import ModelVersion


def _versions(registry: Registry) -> list[ModelVersion]:
    return [v for m in registry.models.values() for v in m.versions.values()]


def healthy(registry: Registry) -> bool:
    """TorchServe's health: False when a version has fewer live workers than its minimum."""
    return all(len(v.pool.live) >= v.min_workers for v in _versions(registry))


def server_ready(registry: Registry) -> bool:
    """Every version that asks for workers is ready."""
    return all(v.ready for v in _versions(registry) if v.min_workers > 0)


def readiness(registry: Registry) -> dict[str, dict[str, int]]:
    """`name/version` → its ready workers and min_workers (the /ready body)."""
    return {
        f"{v.name}/{v.version}": {"ready": v.pool.ready_count, "minWorkers": v.min_workers}
        for v in _versions(registry)
    }
