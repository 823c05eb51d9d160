"""Config snapshots: what is registered, saved as a TorchServe `config.properties` file.

`<folder>/<yyyyMMddHHmmssSSS>-{startup|snapshot|shutdown}.cfg` (UTC), written after start,
after every management change and on shutdown: the server's keys plus `model_snapshot`, so a
snapshot is a valid `--ts-config` file here and for TorchServe. Unlike TorchServe's, a write is
atomic (temp file in the folder, fsync, rename, fsync the folder), runs off the event loop,
never fails the change that asked for it, and a corrupt snapshot is skipped on restore.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from serve.config import Address, Config, ConfigError, SnapshotVersion, build_config
from serve.config.properties import PropertiesError, escape_key, escape_value, parse_properties
from serve.config.torchserve import GRPC, KEYS, MODEL_FIELDS, convert
from serve.json_numbers import whole_number
from serve.models.registry import Registry
from serve.models.version import STARTUP_TIMEOUT, ModelVersion
from serve.snapshots.traffic import traffic_fields

logger = logging.getLogger(__name__)

KEEP = 10  # snapshots kept in the folder; older ones are removed after each write
NAME = re.compile(r"^\d{17}-(startup|snapshot|shutdown)\.cfg$")
_HTTP_ADDRESSES = ("inference_address", "management_address", "metrics_address")
_NOT_WRITTEN = frozenset({"load_models", "model_snapshot"})  # model_snapshot replaces them


def snapshot_folder(config: Config) -> Path:
    """`snapshot_dir`, else `$LOG_LOCATION/config`, else `logs/config` in the working dir."""
    if config.snapshot_dir is not None:
        return config.snapshot_dir.resolve()
    return (Path(os.environ.get("LOG_LOCATION", "logs")) / "config").resolve()


@dataclass(frozen=True, slots=True)
class Restored:
    """The newest readable snapshot and the model versions it holds."""

    path: Path
    models: Mapping[str, Mapping[str, SnapshotVersion]]


def latest(folder: Path) -> Restored | None:
    """The newest snapshot that reads cleanly; each unreadable one is logged with its path."""
    try:
        names = sorted((p.name for p in folder.iterdir() if NAME.match(p.name)), reverse=True)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("Cannot list config snapshots in %s: %s", folder, exc)
        return None
    for name in names:
        path = folder / name
        try:
            return Restored(path, _read(path))
        except (OSError, UnicodeDecodeError, PropertiesError, ConfigError) as exc:
            logger.warning("Skipping corrupt config snapshot %s: %s", path, exc)
    return None


def _read(path: Path) -> Mapping[str, Mapping[str, SnapshotVersion]]:
    props = parse_properties(path.read_text(encoding="utf-8"))
    if "model_snapshot" not in props:
        raise ConfigError("model_snapshot", "missing (a truncated file?)")
    raw = convert({"model_snapshot": props["model_snapshot"]}).raw
    return build_config(raw).model_snapshot


class Snapshots:
    """Writes snapshots one at a time; a change during a write is saved by the next one."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        folder: Path,
        *,
        keep: int = KEEP,
    ) -> None:
        self._config = config
        self._registry = registry
        self._folder = folder
        self._keep = keep
        self._wanted: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_ms = 0
        self._started = False
        self._carried: dict[tuple[str, str], SnapshotVersion] = {}

    def carry(self, failed: Mapping[tuple[str, str], SnapshotVersion]) -> None:
        """Keep these (restore failed) versions in every snapshot written, so a start after
        the cause is fixed restores them; one this run registers itself stops being carried."""
        self._carried.update(failed)

    async def startup(self) -> None:
        """Save the state the server started with."""
        self._started = True
        await self.save("startup")

    async def shutdown(self) -> None:
        """Save the final state; nothing after a failed start, whose partial state must not
        become the models of the next one."""
        if self._started:
            await self.save("shutdown")

    def changed(self) -> None:
        """Save soon (a registry listener; returns at once)."""
        self._request("snapshot")

    async def save(self, kind: str) -> None:
        """Save now and wait until it is written (or its failure logged)."""
        self._request(kind)
        if self._task is not None:
            await self._task

    def _request(self, kind: str) -> None:
        self._wanted = kind
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # the state is read when a write starts, never when it was asked for: the last write
        # always holds the newest state, however many changes came during the one before
        while self._wanted is not None:
            kind, self._wanted = self._wanted, None
            name = f"{self._stamp()}-{kind}.cfg"
            try:
                self._drop_registered()
                text = render(self._config, self._registry, name, self._carried)
                await asyncio.to_thread(write, self._folder, name, text, self._keep)
            except Exception as exc:  # a snapshot must never fail a change or a shutdown
                logger.error(
                    "Cannot write config snapshot %s: %s",
                    self._folder / name,
                    exc,
                    exc_info=not isinstance(exc, OSError),  # a bug, not the disk: say where
                )
            else:
                logger.debug("Config snapshot written: %s", self._folder / name)

    def _drop_registered(self) -> None:
        for name, version in list(self._carried):
            model = self._registry.models.get(name)
            if model is not None and version in model.versions:
                del self._carried[name, version]

    def _stamp(self) -> str:
        ms = max(int(time.time() * 1000), self._last_ms + 1)  # unique, increasing names
        self._last_ms = ms
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        return moment.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


def render(
    config: Config,
    registry: Registry,
    name: str,
    carried: Mapping[tuple[str, str], SnapshotVersion] | None = None,
) -> str:
    """The snapshot file's text: the server's keys, then `model_snapshot`.

    `carried` versions (not registered) are written as they were saved; beside registered
    versions of their model they lose their default flag and extra fields (a split), which
    belong to what is registered now.
    """
    models: dict[str, dict[str, Any]] = {}
    split_fields = traffic_fields(registry)  # a split's weights, kept per version (.traffic)
    for model_name, model in sorted(registry.models.items()):
        models[model_name] = {
            key: _version(version, key == model.default, split_fields)
            for key, version in sorted(model.versions.items())
        }
    for (model_name, key), saved in sorted((carried or {}).items()):
        alone = model_name not in registry.models
        models.setdefault(model_name, {}).setdefault(key, _saved_version(saved, alone))
    snapshot = {
        "name": name,
        "modelCount": sum(len(versions) for versions in models.values()),  # as TorchServe
        "created": int(time.time() * 1000),
        "models": models,
    }
    lines = [f"# {name}: config snapshot (TorchServe config.properties format)"]
    lines += [f"{escape_key(k)}={escape_value(v)}" for k, v in server_properties(config)]
    lines.append(f"model_snapshot={escape_value(orjson.dumps(snapshot).decode())}")
    return "\n".join(lines) + "\n"


def _version(
    version: ModelVersion, default: bool, split_fields: Callable[[str, str], dict[str, Any]]
) -> dict[str, Any]:
    s = version.settings
    fields_: dict[str, Any] = {
        "defaultVersion": default,
        "marName": version.store_name,  # a downloaded archive restores from the store
        "minWorkers": version.min_workers,
        "maxWorkers": version.max_workers,
        "batchSize": s.batch_size,
        "maxBatchDelay": s.max_batch_delay,
        "responseTimeout": whole_number(s.response_timeout),
        "startupTimeout": whole_number(s.startup_timeout),
        "runtimeType": "python",
    }
    fields_.update(split_fields(version.name, version.version))
    return fields_


def _saved_version(saved: SnapshotVersion, alone: bool) -> dict[str, Any]:
    fields_: dict[str, Any] = {"defaultVersion": bool(saved.settings.default_version) and alone}
    fields_["marName"] = saved.mar_name
    for key, camel in MODEL_FIELDS.items():
        value = getattr(saved.settings, key)
        if value is not None and key != "default_version":
            fields_[camel] = list(value) if isinstance(value, tuple) else _saved_number(value)
    fields_.setdefault("startupTimeout", int(STARTUP_TIMEOUT))
    fields_["runtimeType"] = "python"
    if alone:
        fields_.update(saved.extra)
    return fields_


def _saved_number(value: Any) -> Any:
    return whole_number(value) if isinstance(value, float) else value


def server_properties(config: Config) -> list[tuple[str, str]]:
    """Every setting config.properties can carry (config.torchserve.KEYS), as properties."""
    names = {row.key: ts_key for ts_key, row in KEYS.items()}
    props: list[tuple[str, str]] = []
    for f in fields(Config):
        value = getattr(config, f.name)
        if f.name in _NOT_WRITTEN or value is None or value == {}:
            continue
        if f.name in GRPC:
            props += [(f.name, value.host), (GRPC[f.name][0], str(value.port))]
        elif f.name in names:
            props.append((names[f.name], _text(f.name, value)))
    return props


def _text(key: str, value: Any) -> str:
    if isinstance(value, Address):
        host = f"[{value.host}]" if ":" in value.host else value.host
        return f"http://{host}:{value.port}" if key in _HTTP_ADDRESSES else f"{host}:{value.port}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return str(whole_number(value))
    if key == "models":
        return orjson.dumps(_operator_models(value)).decode()
    return str(value)


def _operator_models(models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, versions in models.items():
        out[name] = {}
        for version, settings in versions.items():
            out[name][version] = {
                camel: getattr(settings, key)
                for key, camel in MODEL_FIELDS.items()
                if getattr(settings, key) is not None
            }
    return out


def write(folder: Path, name: str, text: str, keep: int) -> None:
    """Write atomically (temp file, fsync, rename, fsync the folder), then keep the newest."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, folder / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    _prune(folder, keep)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(folder: Path, keep: int) -> None:
    names = sorted(p.name for p in folder.iterdir() if NAME.match(p.name))
    for old in names[: max(0, len(names) - keep)]:
        (folder / old).unlink(missing_ok=True)
    # writes are one at a time, so any other temp file was left by a crash mid-write
    for stale in folder.glob(".*.cfg.tmp"):
        stale.unlink(missing_ok=True)
