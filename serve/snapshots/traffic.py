"""Traffic splits in config snapshots: saved as per-version fields, rebuilt after a restore.

A split is kept in each version's `model_snapshot` entry it names: `"trafficWeight": 90` for
a weighted version, `"shadowPercent": 25` for a shadow one. TorchServe ignores fields it does
not know, so the file stays a valid TorchServe config, and no new top-level key is needed.
Once every version of the snapshot has been restored, the fields of each model become its
split again. A version that did not come back is dropped from the split (logged); when no
weight is left the model's default version takes all its traffic. Nothing here is fatal.

When a snapshot is restored its splits win over serve.yaml's `models: {m: {traffic: ...}}`,
as its models replace `load_models`: the snapshot holds what the operator last set through
the API, including a split they removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from serve.config import SnapshotVersion
from serve.errors import ServeError
from serve.models.registry import Registry
from serve.routing.split import SHADOW_KEY, InvalidSplit, Split

logger = logging.getLogger(__name__)

WEIGHT = "trafficWeight"
SHADOW = "shadowPercent"


def traffic_fields(registry: Registry) -> Callable[[str, str], dict[str, Any]]:
    """The snapshot fields of one version: its weight and shadow percentage, when split."""

    def fields(name: str, version: str) -> dict[str, Any]:
        model = registry.models.get(name)
        split = model.split if model is not None else None
        if split is None:
            return {}
        saved: dict[str, Any] = {}
        weight = dict(split.weights).get(version)
        if weight is not None:
            saved[WEIGHT] = weight
        percent = dict(split.shadow).get(version)
        if percent is not None:
            saved[SHADOW] = int(percent) if percent.is_integer() else percent
        return saved

    return fields


def restore_traffic(
    registry: Registry, model_snapshot: Mapping[str, Mapping[str, SnapshotVersion]]
) -> int:
    """Set each model's saved split over the versions that were restored; returns how many."""
    restored = 0
    for name, versions in model_snapshot.items():
        raw = _saved_split(versions)
        if raw is None:
            continue
        model = registry.models.get(name)
        if model is None:
            logger.error("Cannot restore the traffic split of model %s: it was not restored", name)
            continue
        present = set(model.versions)
        missing = sorted(_named(raw) - present)
        if missing:
            logger.error(
                "Traffic split of model %s: dropping version(s) %s, which were not restored",
                name,
                ", ".join(missing),
            )
            raw = _without(raw, present)
        try:
            split = Split.parse(raw)
        except InvalidSplit as exc:
            logger.error(
                "Cannot restore the traffic split of model %s (%s); version %s takes all its "
                "traffic",
                name,
                exc.message,
                model.default,
            )
            continue
        try:
            registry.set_traffic(name, split)
        except ServeError as exc:  # not expected: every named version was just checked
            logger.error("Cannot restore the traffic split of model %s: %s", name, exc.message)
            continue
        restored += 1
    return restored


def _saved_split(versions: Mapping[str, SnapshotVersion]) -> dict[str, Any] | None:
    """The split's API shape from the versions' fields; None when none was saved."""
    raw: dict[str, Any] = {}
    shadow: dict[str, Any] = {}
    for version, saved in sorted(versions.items()):
        if WEIGHT in saved.extra:
            raw[version] = saved.extra[WEIGHT]
        if SHADOW in saved.extra:
            shadow[version] = saved.extra[SHADOW]
    if not raw and not shadow:
        return None
    if shadow:
        raw[SHADOW_KEY] = shadow
    return raw


def _named(raw: Mapping[str, Any]) -> set[str]:
    return {v for v in raw if v != SHADOW_KEY} | set(raw.get(SHADOW_KEY, {}))


def _without(raw: Mapping[str, Any], present: set[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {v: w for v, w in raw.items() if v != SHADOW_KEY and v in present}
    shadow = {v: p for v, p in raw.get(SHADOW_KEY, {}).items() if v in present}
    if shadow:
        kept[SHADOW_KEY] = shadow
    return kept
