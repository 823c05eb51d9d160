"""Validation: raw keys (from YAML or config.properties) into a Config, or a ConfigError.

Every error names the dotted key. It all runs before any port is bound, so a bad file never
leaves a half-started server behind.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from serve.config.schema import (
    MAX_INT,
    MAX_WORKERS,
    SHAREABLE,
    TRAFFIC_KEY,
    Address,
    Config,
    ConfigError,
    ModelSettings,
    SnapshotVersion,
)
from serve.routing.split import InvalidSplit, Split

# --- validators: each takes (key, raw value) and returns the typed value or raises ----------


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(key, f"must be at most {maximum}, got {value}")
        return value

    return check


def _optional_int(minimum: int) -> Callable[[str, Any], int | None]:
    inner = _int(minimum)

    def check(key: str, value: Any) -> int | None:
        return None if value is None else inner(key, value)

    return check


def _positive(unit: str) -> Callable[[str, Any], float]:
    """A number greater than 0, of `unit` (seconds, minutes), as a float."""

    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number of {unit}, got {value!r}")
        if value <= 0:
            raise ConfigError(key, f"must be greater than 0, got {value}")
        if not value <= MAX_INT:  # also NaN
            raise ConfigError(key, f"must be at most {MAX_INT}, got {value}")
        return float(value)

    return check


_seconds = _positive("seconds")
_minutes = _positive("minutes")


def _optional_seconds(key: str, value: Any) -> float | None:
    return None if value is None else _seconds(key, value)


def _regex_list(key: str, value: Any) -> tuple[str, ...]:
    patterns = _str_list(key, value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(key, f"{pattern!r} is not a valid regular expression: {exc}") from exc
    return patterns


def _metrics_mode(key: str, value: Any) -> str:
    # TorchServe ignores case and blanks (and takes an unknown mode as `log`: we refuse it)
    mode = _str(key, value).strip().lower()
    if mode not in ("prometheus", "log", "legacy"):
        raise ConfigError(key, f"expected prometheus, log or legacy, got {value!r}")
    return mode


def _log_format(key: str, value: Any) -> str:
    text = _str(key, value).lower()
    if text not in ("text", "json"):
        raise ConfigError(key, f"expected text or json, got {value!r}")
    return text


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, f"expected true or false, got {value!r}")


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _path(key: str, value: Any) -> Path:
    return Path(os.path.expanduser(_str(key, value)))


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, list):
        items = [_str(f"{key}[{i}]", item) for i, item in enumerate(value)]
    else:
        raise ConfigError(key, f"expected a list or a comma-separated string, got {value!r}")
    return tuple(item for item in items if item)


def _log_level(key: str, value: Any) -> str:
    level = _str(key, value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(key, f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
    return level


def parse_address(key: str, value: Any) -> Address:
    """Parse `host:port` or `http://host:port`; `https://` and `unix:` are refused clearly."""
    text = _str(key, value)
    if text.startswith("https://"):
        raise ConfigError(key, "TLS (https://) is not supported yet; terminate TLS in a proxy")
    if text.startswith("unix:"):
        raise ConfigError(key, "unix sockets are not supported; use host:port")
    text = text.removeprefix("http://").removeprefix("grpc://").rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(key, f"port must be a number from 0 to 65535, got {port_text!r}")
    return Address(host, int(port_text))


def _devices(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"expected a non-empty list of device ids, got {value!r}")
    return tuple(_int(0)(f"{key}[{i}]", item) for i, item in enumerate(value))


_MODEL_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "batch_size": _int(1, MAX_INT),
    "max_batch_delay": _int(0, MAX_INT),
    "min_workers": _int(0, MAX_WORKERS),
    "max_workers": _int(0, MAX_WORKERS),
    "response_timeout": _seconds,
    "devices": _devices,
    "default_version": _bool,
}


def _model_settings(key: str, value: Any) -> ModelSettings:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of settings, got {value!r}")
    values: dict[str, Any] = {}
    for name, raw in value.items():
        check = _MODEL_KEYS.get(str(name))
        if check is None:
            raise ConfigError(f"{key}.{name}", _unknown(str(name), _MODEL_KEYS))
        values[str(name)] = check(f"{key}.{name}", raw)
    settings = ModelSettings(**values)
    if (
        settings.min_workers is not None
        and settings.max_workers is not None
        and settings.max_workers < settings.min_workers
    ):
        raise ConfigError(f"{key}.max_workers", "cannot be less than min_workers")
    return settings


def _models(key: str, value: Any) -> dict[str, dict[str, ModelSettings]]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of model names, got {value!r}")
    models: dict[str, dict[str, ModelSettings]] = {}
    for name, versions in value.items():
        if not isinstance(versions, dict):
            raise ConfigError(f"{key}.{name}", "expected a mapping of versions to settings")
        models[str(name)] = {
            str(version): _model_settings(f"{key}.{name}.{version}", settings)
            for version, settings in versions.items()
            if str(version) != TRAFFIC_KEY
        }
    return models


def _model_snapshot(key: str, value: Any) -> dict[str, dict[str, SnapshotVersion]]:
    """`{name: {version: {mar_name, extra, <models keys>}}}`: the models a snapshot restores."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping of model names, got {value!r}")
    restored: dict[str, dict[str, SnapshotVersion]] = {}
    for name, versions in value.items():
        if not isinstance(versions, dict) or not versions:
            raise ConfigError(f"{key}.{name}", "expected a mapping of versions to settings")
        restored[str(name)] = {}
        for version, entry in versions.items():
            where = f"{key}.{name}.{version}"
            if not isinstance(entry, dict):
                raise ConfigError(where, f"expected a mapping of settings, got {entry!r}")
            rest = dict(entry)
            mar_name = _str(f"{where}.mar_name", rest.pop("mar_name", None))
            extra = rest.pop("extra", {})
            if not isinstance(extra, dict):
                raise ConfigError(f"{where}.extra", f"expected a mapping, got {extra!r}")
            settings = _model_settings(where, rest)
            restored[str(name)][str(version)] = SnapshotVersion(mar_name, settings, extra)
    return restored


def _traffic(key: str, value: Any) -> dict[str, Split]:
    """The `traffic` entries of the (already checked) `models:` section, validated."""
    splits: dict[str, Split] = {}
    for name, versions in value.items():
        if TRAFFIC_KEY not in versions:
            continue
        where = f"{key}.{name}.{TRAFFIC_KEY}"
        try:
            splits[str(name)] = Split.parse(versions[TRAFFIC_KEY])
        except InvalidSplit as exc:
            raise ConfigError(f"{where}.{exc.key}" if exc.key else where, exc.message) from None
    return splits


_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "inference_address": parse_address,
    "management_address": parse_address,
    "metrics_address": parse_address,
    "grpc_inference_address": parse_address,
    "grpc_management_address": parse_address,
    "model_store": _path,
    "load_models": _str_list,
    "default_workers_per_model": _int(0, MAX_WORKERS),
    "job_queue_size": _int(1),
    "max_request_size": _int(1),
    "default_response_timeout": _seconds,
    "default_startup_timeout": _seconds,
    "enable_model_api": _bool,
    "disable_token_authorization": _bool,
    "token_expiration_min": _minutes,
    "access_log": _bool,
    "access_log_format": _log_format,
    "no_config_snapshots": _bool,
    "allowed_urls": _regex_list,
    "max_download_size": _int(1),
    "download_timeout": _seconds,
    "max_request_time": _optional_seconds,
    "install_py_dep_per_model": _bool,
    "number_of_gpu": _optional_int(0),
    "torch_num_threads": _int(0),
    "adaptive_batching": _bool,
    "log_level": _log_level,
    "routing_header": _str,
    "metrics_config": _path,
    "metrics_mode": _metrics_mode,
    "model_metrics_auto_detect": _bool,
    "disable_system_metrics": _bool,
    "metric_time_interval": _seconds,
    "models": _models,
    "model_snapshot": _model_snapshot,
    "snapshot_dir": _path,
}
assert set(_KEYS) == {f.name for f in fields(Config)} - {"traffic", "metrics"}


def _unknown(name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint}"


def build_config(raw: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a mapping of raw settings into a Config; relative paths resolve from base_dir."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        check = _KEYS.get(str(key))
        if check is None:
            raise ConfigError(str(key), _unknown(str(key), _KEYS))
        values[str(key)] = check(str(key), value)
    if "models" in values:
        values["traffic"] = _traffic("models", raw["models"])
    for path_key in ("model_store", "snapshot_dir", "metrics_config"):
        path = values.get(path_key)
        if path is not None and base_dir is not None and not path.is_absolute():
            values[path_key] = base_dir / path
    if values.get("metrics_config") is not None:
        from serve.config.metrics import load_metrics_spec  # it imports ConfigError from here

        values["metrics"] = load_metrics_spec(values["metrics_config"])
    config = Config(**values)
    _check_ports(config)
    return config


def _check_ports(config: Config) -> None:
    seen: dict[tuple[str, int], str] = {}
    for key in (
        "inference_address",
        "management_address",
        "metrics_address",
        "grpc_inference_address",
        "grpc_management_address",
    ):
        address: Address = getattr(config, key)
        if address.port == 0:
            continue
        slot = (address.host, address.port)
        if slot in seen and {key, seen[slot]} == SHAREABLE:
            continue
        if slot in seen:
            raise ConfigError(key, f"port {address.port} is already used by {seen[slot]}")
        seen[slot] = key
