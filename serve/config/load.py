"""Loading: the YAML file plus command-line overrides, validated into a Config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from serve.config.schema import Config, ConfigError
from serve.config.validate import build_config


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the YAML file (if any), apply CLI overrides, and validate the result."""
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("--config", f"{path} must hold a mapping of keys")
        raw.update(loaded)
        base_dir = path.resolve().parent
    raw.update(overrides or {})
    return build_config(raw, base_dir)
