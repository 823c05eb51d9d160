"""TorchServe's `config.properties` as a second reader of the one Config (see serve.config).

The file is read as Java properties, `$$NAME$$` is replaced by the environment variable NAME,
and with `enable_envvars_config=true` every `TS_<KEY>` variable overrides `<key>`. Each key then
goes through `KEYS`: TorchServe's name → our key and a converter from the text to the raw value
serve.yaml would hold, so both files meet in `build_config` and its validation. To support a
new key, add its row to `KEYS` (and take it out of `IGNORED` if it was there).

TorchServe keys this server has no use for are accepted with one warning line naming them;
unknown keys are warned about too (TorchServe ignores them); a malformed value of a known key
is a ConfigError naming it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from serve.config.properties import PropertiesError, parse_properties
from serve.config.schema import Config, ConfigError
from serve.config.validate import build_config

Convert = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class Row:
    """Where a properties key goes: our config key and how its text becomes a raw value."""

    key: str
    convert: Convert


def _text(key: str, text: str) -> str:
    return text.strip()


def _integer(key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(key, f"expected an integer, got {text!r}") from None


def _number(key: str, text: str) -> int | float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(key, f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() else value


def _boolean(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ConfigError(key, f"expected true or false, got {text!r}")
    return lowered == "true"


def _json(key: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(key, f"is not valid JSON: {exc}") from None


# our `models:` keys → TorchServe's per-version JSON fields (in `models` and `model_snapshot`),
# read here and written by serve.snapshots
MODEL_FIELDS = {
    "batch_size": "batchSize",
    "max_batch_delay": "maxBatchDelay",
    "min_workers": "minWorkers",
    "max_workers": "maxWorkers",
    "response_timeout": "responseTimeout",
    "devices": "deviceIds",
    "default_version": "defaultVersion",
}
_OUR_KEYS = {camel: key for key, camel in MODEL_FIELDS.items()}
# TorchServe ignores values <= 0 in `models`; a snapshot may hold a model scaled to 0 workers
_ZERO_ALLOWED = frozenset({"min_workers", "max_workers"})


def _versions(key: str, value: Any, *, snapshot: bool) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a JSON object of model names, got {value!r}")
    models: dict[str, dict[str, Any]] = {}
    for name, versions in value.items():
        if not isinstance(versions, dict):
            raise ConfigError(f"{key}.{name}", "expected a JSON object of versions")
        models[name] = {}
        for version, fields in versions.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{key}.{name}.{version}", "expected a JSON object of settings")
            models[name][version] = _version_fields(fields, snapshot=snapshot)
    return models


def _version_fields(fields: Mapping[str, Any], *, snapshot: bool) -> dict[str, Any]:
    ours: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in fields.items():
        key = _OUR_KEYS.get(name)
        if key is None:
            extra[name] = value
            continue
        if isinstance(value, float) and value.is_integer() and key != "response_timeout":
            value = int(value)
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and (value < 0 or (value == 0 and not (snapshot and key in _ZERO_ALLOWED))):
            continue
        ours[key] = value
    if snapshot:
        ours["mar_name"] = extra.pop("marName", None)
        ours["extra"] = extra
    return ours


def _models(key: str, text: str) -> dict[str, dict[str, Any]]:
    return _versions(key, _json(key, text), snapshot=False)


def _model_snapshot(key: str, text: str) -> dict[str, dict[str, Any]]:
    value = _json(key, text)
    if not isinstance(value, dict) or not isinstance(value.get("models"), dict):
        raise ConfigError(key, 'expected a JSON object with a "models" object')
    models = _versions(key, value["models"], snapshot=True)
    # TorchServe counts versions; a count that disagrees means a damaged file
    count, listed = value.get("modelCount"), sum(len(versions) for versions in models.values())
    if count is not None and count != listed:
        raise ConfigError(key, f"modelCount is {count} but {listed} model version(s) are listed")
    return models


KEYS: dict[str, Row] = {
    "inference_address": Row("inference_address", _text),
    "management_address": Row("management_address", _text),
    "metrics_address": Row("metrics_address", _text),
    "model_store": Row("model_store", _text),
    "load_models": Row("load_models", _text),
    "default_workers_per_model": Row("default_workers_per_model", _integer),
    "job_queue_size": Row("job_queue_size", _integer),
    "max_request_size": Row("max_request_size", _integer),
    "default_response_timeout": Row("default_response_timeout", _number),
    "default_startup_timeout": Row("default_startup_timeout", _number),
    "enable_model_api": Row("enable_model_api", _boolean),
    "disable_token_authorization": Row("disable_token_authorization", _boolean),
    "token_expiration_min": Row("token_expiration_min", _number),
    "allowed_urls": Row("allowed_urls", _text),
    "install_py_dep_per_model": Row("install_py_dep_per_model", _boolean),
    "number_of_gpu": Row("number_of_gpu", _integer),
    "models": Row("models", _models),
    "model_snapshot": Row("model_snapshot", _model_snapshot),
    # ours, so that a snapshot (also a config.properties) carries every setting
    "no_config_snapshots": Row("no_config_snapshots", _boolean),
    "snapshot_dir": Row("snapshot_dir", _text),
    "torch_num_threads": Row("torch_num_threads", _integer),
    "adaptive_batching": Row("adaptive_batching", _boolean),
    "log_level": Row("log_level", _text),
    "max_download_size": Row("max_download_size", _integer),
    "download_timeout": Row("download_timeout", _number),
    "max_request_time": Row("max_request_time", _number),
    "access_log": Row("access_log", _boolean),
    "access_log_format": Row("access_log_format", _text),
    "metrics_config": Row("metrics_config", _text),
    "metrics_mode": Row("metrics_mode", _text),
    "model_metrics_auto_detect": Row("model_metrics_auto_detect", _boolean),
    "disable_system_metrics": Row("disable_system_metrics", _boolean),
    "metric_time_interval": Row("metric_time_interval", _number),
}

# gRPC listeners: TorchServe splits them into a host key and a port key
GRPC = {
    "grpc_inference_address": ("grpc_inference_port", 7070),
    "grpc_management_address": ("grpc_management_port", 7071),
}

# TorchServe keys that do not apply to this server (JVM, Netty, TLS, plugins, ...)
IGNORED = frozenset(
    {
        "enable_envvars_config",
        "use_env_allowed_urls",
        "max_response_size",
        "unregister_model_timeout",
        "enable_metrics_api",
        "metrics_format",
        "async_logging",
        "number_of_netty_threads",
        "netty_client_threads",
        "initial_worker_port",
        "initial_distribution_port",
        "decode_input_request",
        "default_service_handler",
        "service_envelope",
        "limit_max_image_pixels",
        "blacklist_env_vars",
        "cors_allowed_origin",
        "cors_allowed_methods",
        "cors_allowed_headers",
        "prefer_direct_buffer",
        "use_native_io",
        "io_ratio",
        "cpu_launcher_enable",
        "cpu_launcher_args",
        "ipex_enable",
        "ipex_gpu_enable",
        "ts_open_inference_protocol",
        "vmargs",
        "workflow_store",
        "python",
        "system_metrics_cmd",
        "ts_header_key_sequence_id",
        "ts_header_key_sequence_start",
        "ts_header_key_sequence_end",
        "keystore",
        "keystore_pass",
        "keystore_type",
        "certificate_file",
        "private_key_file",
        "enable_grpc_ssl",
        "grpc_inference_max_connection_age_ms",
        "grpc_inference_max_connection_age_grace_ms",
        "grpc_management_max_connection_age_ms",
        "grpc_management_max_connection_age_grace_ms",
        "plugins_path",
        "model_server_home",
        "tsConfigFile",  # written into TorchServe's own snapshots
        "version",
    }
)

_ENV_REFERENCE = re.compile(r"\$\$([^$]+[^$])\$\$")


@dataclass(frozen=True, slots=True)
class TsConfig:
    """A config.properties read into serve.yaml's raw form, and what to warn about."""

    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def read_ts_config(path: Path, env: Mapping[str, str]) -> TsConfig:
    """Read and convert a config.properties file; errors name the key (or the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--ts-config", f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("--ts-config", f"{path} is not UTF-8 text: {exc}") from exc
    try:
        props = parse_properties(text)
    except PropertiesError as exc:
        raise ConfigError("--ts-config", f"{path}: {exc}") from exc
    props = {key: _substitute(key, value, env) for key, value in props.items()}
    if _enabled(props, env, "enable_envvars_config"):
        props.update(_env_overrides(props, env))
    return convert(props)


def convert(props: Mapping[str, str]) -> TsConfig:
    """Properties (after substitution) → serve.yaml's raw mapping, plus warnings."""
    raw: dict[str, Any] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, text in props.items():
        row = KEYS.get(key)
        if row is not None:
            raw[row.key] = row.convert(key, text)
        elif key in IGNORED:
            ignored.append(key)
        elif key not in GRPC and key not in {port for port, _ in GRPC.values()}:
            unknown.append(key)
    for key, (port_key, default_port) in GRPC.items():
        if key in props or port_key in props:
            host = props.get(key, "127.0.0.1").strip() or "127.0.0.1"
            port = _integer(port_key, props.get(port_key, str(default_port)))
            raw[key] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    warnings = []
    if ignored:
        warnings.append(f"config.properties: TorchServe keys ignored here: {', '.join(ignored)}")
    if unknown:
        named = ", ".join(_with_hint(key) for key in unknown)
        warnings.append(f"config.properties: unknown keys ignored: {named}")
    return TsConfig(raw, warnings)


def _with_hint(key: str) -> str:
    """An unknown key, with the closest key this server reads: a typo is ignored (as by
    TorchServe), so the warning is the only place it shows."""
    known = [*KEYS, *GRPC, *(port for port, _ in GRPC.values())]
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key} (did you mean {close[0]!r}?)" if close else key


def load_ts_config(
    path: Path, overrides: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The Config of a config.properties file with CLI overrides, and the warnings to log.

    Relative paths resolve from the working directory, as TorchServe resolves them.
    """
    read = read_ts_config(path, os.environ if env is None else env)
    return build_config({**read.raw, **overrides}, Path.cwd()), read.warnings


def _substitute(key: str, value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(key, f"environment variable {name} (from $${name}$$) is not set")
        return env[name]

    return _ENV_REFERENCE.sub(replace, value)


def _enabled(props: Mapping[str, str], env: Mapping[str, str], key: str) -> bool:
    text = props.get(key, env.get(f"TS_{key.upper()}", "false"))
    return _boolean(key, text)


def _env_overrides(props: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """TS_<KEY> variables as keys; TS_ALLOWED_URLS only with use_env_allowed_urls=true."""
    overrides = {}
    for name, value in env.items():
        if not name.startswith("TS_") or name == "TS_CONFIG_FILE":
            continue
        key = name[3:].lower()
        if key == "allowed_urls" and not _enabled(props, env, "use_env_allowed_urls"):
            continue
        overrides[key] = value
    return overrides
