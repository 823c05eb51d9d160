"""TorchServe's metrics.yaml (`metrics_config`): which metrics exist, with their types, units
and dimensions.

`ts_metrics` declares the frontend metrics (TorchServe emits a frontend metric only when it is
declared); `model_metrics` declares the handler metrics (`context.metrics`), which are loaded
into every handler's metrics cache before `initialize` and exported with the declared type and
dimensions, `Hostname` last. A malformed file is a ConfigError naming `metrics_config`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serve.config.schema import ConfigError

KEY = "metrics_config"
KINDS = ("counter", "gauge", "histogram")
MODES = ("prometheus", "log", "legacy")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")  # Prometheus' rules for metric
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # and label names


@dataclass(frozen=True, slots=True)
class MetricDecl:
    """One declared metric: `kind` is counter, gauge or histogram."""

    name: str
    kind: str
    unit: str
    dimensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetricsSpec:
    """A parsed metrics.yaml."""

    path: Path
    ts_metrics: Mapping[str, MetricDecl]
    model_metrics: Mapping[str, MetricDecl]


def load_metrics_spec(path: Path) -> MetricsSpec:
    """Read and check a metrics.yaml; every problem is a ConfigError naming `metrics_config`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(KEY, f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(KEY, f"{path} is not UTF-8 text: {exc}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(KEY, f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(KEY, f"{path} must hold a mapping with ts_metrics and model_metrics")
    unknown = sorted(
        str(k) for k in loaded if k not in ("dimensions", "ts_metrics", "model_metrics")
    )
    if unknown:
        raise ConfigError(KEY, f"{path}: unknown section(s) {', '.join(unknown)}")
    dims = loaded.get("dimensions", [])
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        raise ConfigError(KEY, f"{path}: dimensions must be a list of names")
    # TorchServe's workers refuse a file without model_metrics (MetricsCacheValueError)
    if not loaded.get("model_metrics"):
        raise ConfigError(KEY, f"{path}: the model_metrics section is missing or empty")
    return MetricsSpec(
        path=path,
        ts_metrics=_section(path, "ts_metrics", loaded.get("ts_metrics") or {}),
        model_metrics=_section(path, "model_metrics", loaded["model_metrics"]),
    )


def _section(path: Path, section: str, value: Any) -> dict[str, MetricDecl]:
    if not isinstance(value, dict):
        raise ConfigError(KEY, f"{path}: {section} must map counter/gauge/histogram to lists")
    declared: dict[str, MetricDecl] = {}
    for kind, entries in value.items():
        where = f"{section}.{kind}"
        if kind not in KINDS:
            raise ConfigError(KEY, f"{path}: {where}: unknown metric type (use {', '.join(KINDS)})")
        if not isinstance(entries, list):
            raise ConfigError(KEY, f"{path}: {where} must be a list of metrics")
        for i, entry in enumerate(entries):
            decl = _metric(path, f"{where}[{i}]", str(kind), entry)
            if decl.name in declared:
                raise ConfigError(KEY, f"{path}: {where}[{i}]: {decl.name!r} is declared twice")
            declared[decl.name] = decl
    return declared


def _metric(path: Path, where: str, kind: str, entry: Any) -> MetricDecl:
    if not isinstance(entry, dict):
        raise ConfigError(KEY, f"{path}: {where} must be a mapping with name, unit, dimensions")
    name, unit, dims = entry.get("name"), entry.get("unit"), entry.get("dimensions", [])
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(KEY, f"{path}: {where}.name must be a Prometheus metric name: {name!r}")
    if not isinstance(unit, str):
        raise ConfigError(KEY, f"{path}: {where}.unit must be a string")
    if not isinstance(dims, list) or not all(
        isinstance(d, str) and _LABEL.fullmatch(d) for d in dims
    ):
        raise ConfigError(
            KEY, f"{path}: {where}.dimensions must be a list of label names: {dims!r}"
        )
    extra = sorted(str(k) for k in entry if k not in ("name", "unit", "dimensions"))
    if extra:
        raise ConfigError(KEY, f"{path}: {where}: unknown key(s) {', '.join(extra)}")
    return MetricDecl(name, kind, unit, tuple(dims))
