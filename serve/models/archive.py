"""Model archives: find one in the model store, extract it safely, read its manifest and config.

Supported forms are TorchServe's: a `.mar` zip (deflated or stored), a `.tar.gz`, and a plain
folder. Extraction writes only inside a private folder per model version: members with absolute
paths, `..` components, or links leaving that folder are refused before anything is written.
This module does blocking file I/O; the server calls it from a worker thread.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from serve.batching.sequence_policy import SequenceSettings
from serve.config import MAX_INT, MAX_WORKERS
from serve.errors import BadRequest, InvalidModel, ModelNotFound
from serve.mar import ARCHIVE_SUFFIXES, MANIFEST, MODEL_NAME_PATTERN
from serve.models.hints import closest, either, listed


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """The frontend keys of the archive's model-config.yaml (None when unset)."""

    min_workers: int | None = None
    max_workers: int | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    response_timeout: float | None = None
    device_type: str | None = None
    device_ids: tuple[int, ...] | None = None
    job_queue_size: int | None = None
    sequence: SequenceSettings | None = None  # sequenceBatching: true
    startup_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ModelArchive:
    """An archive opened into a folder the model version owns."""

    name: str
    version: str
    handler: str | None
    runtime: str
    manifest: dict[str, Any]
    model_dir: Path
    yaml_config: dict[str, Any]
    settings: ArchiveSettings
    owned_dir: Path | None
    deps_dir: Path | None = None  # per-model Python packages (serve/models/requirements.py)

    def remove(self) -> None:
        """Delete the extracted and package folders (never a plain folder from the store)."""
        for folder in (self.deps_dir, self.owned_dir):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def check_model_name(name: str, what: str = "model_name") -> str:
    """Refuse names that could escape a path or confuse a URL."""
    if not MODEL_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise BadRequest(
            f"Invalid {what} {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )
    return name


def locate(store: Path | None, url: str) -> Path:
    """The archive path for a registration `url` naming a file or folder in the model store.

    (URLs with a scheme are fetched into the store first: serve.models.download.)
    """
    if store is None:
        raise ModelNotFound(f"Model not found at: {url} (no model_store is configured)")
    name = in_store(store, url)
    if not name or ".." in PurePosixPath(name).parts:
        raise ModelNotFound(f"Relative path is not allowed in url: {url}")
    if PurePosixPath(name).is_absolute():
        raise ModelNotFound(
            f"Model not found at: {url}: an absolute path must be inside the model store {store}"
        )
    path = store / name
    if not path.exists():
        raise ModelNotFound(_missing(store, url))
    return path


def _missing(store: Path, name: str) -> str:
    """Where `name` was looked for, and the store's archives closest to it."""
    where = f"Model not found at: {name} (looked in the model store {store}"
    present = store_archives(store)
    if not present:
        return f"{where}, which holds no archives)"
    near = closest_archives(name, present)
    if near:
        return f"{where}); did you mean {either(near)}?"
    return f"{where}, which holds {listed(present)})"


def closest_archives(name: str, present: list[str]) -> list[str]:
    """The archives of `present` whose names look like `name`, compared without the suffix
    (else `resnet.mar` would be taken for `mnist.mar`)."""
    stems = closest(default_name(Path(name)), {default_name(Path(p)) for p in present})
    return [p for stem in stems for p in present if default_name(Path(p)) == stem]


def store_archives(store: Path) -> list[str]:
    """The archive files and archive folders directly in `store`, sorted."""
    try:
        entries = sorted(store.iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        if path.name.startswith("."):  # a download still being written (serve.models.download)
            continue
        is_file = path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)
        if is_file or (path.is_dir() and (path / MANIFEST).is_file()):
            found.append(path.name)
    return found


def in_store(store: Path, url: str) -> str:
    """`url` relative to the store when it is an absolute path inside it, else `url` as given.

    TorchServe's clients register `<model_store>/name` as well as `name`; the path is resolved
    (links and `..` followed) before the check, so it cannot leave the store.
    """
    if not PurePosixPath(url).is_absolute():
        return url
    root = store.resolve()
    target = Path(url).resolve()
    if target == root or not target.is_relative_to(root):
        return url
    return target.relative_to(root).as_posix()


def default_name(path: Path) -> str:
    """A model name from the archive's file name, as TorchServe derives it."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def open_archive(path: Path, workdir: Path) -> ModelArchive:
    """Extract `path` into a new folder under `workdir` (folders are used in place)."""
    if path.is_dir():
        return _read(path, path, source=path, owns_dir=False)
    workdir.mkdir(parents=True, exist_ok=True)
    target = _fresh_dir(workdir, default_name(path))
    try:
        if zipfile.is_zipfile(path):
            _extract_zip(path, target)
        elif tarfile.is_tarfile(path):
            _extract_tar(path, target)
        else:
            raise InvalidModel(f"{path.name} is not a zip (.mar), tar.gz or folder archive")
        root = _unwrap(target)
        return _read(root, target, source=path, owns_dir=True)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _fresh_dir(workdir: Path, stem: str) -> Path:
    for n in range(10_000):
        candidate = workdir / f"{stem}-{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise InvalidModel(f"cannot create an extraction folder for {stem} in {workdir}")


def _safe_member(name: str, archive: str) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or re.match(r"^[A-Za-z]:", name):
        raise InvalidModel(
            f"Refusing archive {archive}: member {name!r} would be written outside its folder"
        )
    return member


def _link_escapes(member: PurePosixPath, link: str) -> bool:
    target = PurePosixPath(link)
    if target.is_absolute():
        return True
    depth = len(member.parent.parts)
    for part in target.parts:
        depth = depth - 1 if part == ".." else depth + (part != ".")
        if depth < 0:
            return True
    return False


def _extract_zip(path: Path, target: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        for info in members:
            member = _safe_member(info.filename, path.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                link = archive.read(info).decode("utf-8", "replace")
                if _link_escapes(member, link):
                    raise InvalidModel(
                        f"Refusing archive {path.name}: "
                        f"link {info.filename!r} points outside its folder"
                    )
        archive.extractall(target)


def _extract_tar(path: Path, target: Path) -> None:
    with tarfile.open(path) as archive:
        for info in archive.getmembers():
            member = _safe_member(info.name, path.name)
            if (info.issym() or info.islnk()) and _link_escapes(member, info.linkname):
                raise InvalidModel(
                    f"Refusing archive {path.name}: link {info.name!r} points outside its folder"
                )
            if info.isdev():
                raise InvalidModel(f"Refusing archive {path.name}: {info.name!r} is a device file")
        try:
            archive.extractall(target, filter="data")
        except tarfile.FilterError as exc:
            raise InvalidModel(f"Refusing archive {path.name}: {exc}") from exc


def _unwrap(folder: Path) -> Path:
    """A tar.gz holding a single top-level folder is unwrapped, as TorchServe does."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not (folder / MANIFEST).exists():
        return entries[0]
    return folder


def _read(model_dir: Path, owned: Path, *, source: Path, owns_dir: bool) -> ModelArchive:
    manifest = _manifest(model_dir)
    model = manifest.get("model", {})
    if not isinstance(model, dict):
        raise InvalidModel("MANIFEST.json: 'model' must be an object")
    name = str(model.get("modelName") or default_name(source))
    version = str(model.get("modelVersion") or "1.0")
    handler = model.get("handler")
    runtime = str(manifest.get("runtime") or "python")
    if runtime not in ("python", "python3", "LSP"):
        raise InvalidModel(f"Runtime is not defined or invalid: {runtime!r}")
    yaml_config: dict[str, Any] = {}
    config_file = model.get("configFile")
    if config_file:
        yaml_config = _yaml_config(model_dir / str(config_file), str(config_file))
    return ModelArchive(
        name=name,
        version=version,
        handler=str(handler) if handler else None,
        runtime=runtime,
        manifest=manifest,
        model_dir=model_dir,
        yaml_config=yaml_config,
        settings=archive_settings(yaml_config),
        owned_dir=owned if owns_dir else None,
    )


def _manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"MANIFEST.json is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise InvalidModel("MANIFEST.json must hold a JSON object")
    return manifest


def _yaml_config(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidModel(f"The manifest names config file {name!r}, which is not in the archive")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidModel(f"{name} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidModel(f"{name} must hold a mapping of keys")
    return loaded


def _positive_int(config: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidModel(f"model-config.yaml: {key} must be an integer, got {value!r}")
    if value < minimum:
        return None  # TorchServe ignores out-of-range values here
    if value > MAX_INT:  # TorchServe cannot read it at all (a Java int)
        raise InvalidModel(f"model-config.yaml: {key} must be at most {MAX_INT}, got {value}")
    return value


def _worker_count(config: Mapping[str, Any], key: str) -> int | None:
    value = _positive_int(config, key, 0)
    if value is not None and value > MAX_WORKERS:
        raise InvalidModel(f"model-config.yaml: {key} must be at most {MAX_WORKERS}, got {value}")
    return value


def archive_settings(config: Mapping[str, Any]) -> ArchiveSettings:
    """Read the frontend keys TorchServe's ModelConfig understands."""
    timeout = config.get("responseTimeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise InvalidModel(f"model-config.yaml: responseTimeout must be a number, got {timeout!r}")
    device_type = config.get("deviceType")
    if device_type is not None and device_type not in ("cpu", "gpu"):
        raise InvalidModel(f"model-config.yaml: deviceType must be cpu or gpu, got {device_type!r}")
    ids = config.get("deviceIds")
    device_ids: tuple[int, ...] | None = None
    if ids is not None:
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise InvalidModel(
                f"model-config.yaml: deviceIds must be a list of integers, got {ids!r}"
            )
        device_ids = tuple(ids) or None
    return ArchiveSettings(
        min_workers=_worker_count(config, "minWorkers"),
        max_workers=_worker_count(config, "maxWorkers"),
        batch_size=_positive_int(config, "batchSize", 1),
        max_batch_delay=_positive_int(config, "maxBatchDelay", 0),
        response_timeout=float(timeout) if timeout is not None and timeout > 0 else None,
        device_type=device_type,
        device_ids=device_ids,
        job_queue_size=_positive_int(config, "jobQueueSize", 1),
        sequence=_sequence_settings(config),
        startup_timeout=_seconds(config, "startupTimeout"),
    )


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise InvalidModel(f"model-config.yaml: {key} must be true or false, got {value!r}")
    return value


def _seconds(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidModel(f"model-config.yaml: {key} must be a number, got {value!r}")
    if not value <= MAX_INT:  # also NaN and .inf
        raise InvalidModel(f"model-config.yaml: {key} must be at most {MAX_INT}, got {value}")
    return float(value) if value > 0 else None  # TorchServe ignores values <= 0


def _sequence_settings(config: Mapping[str, Any]) -> SequenceSettings | None:
    """TorchServe's stateful keys; None unless sequenceBatching is true."""
    if not _flag(config, "sequenceBatching"):
        return None
    idle = _positive_int(config, "sequenceMaxIdleMSec", 1)
    if idle is None:
        # TorchServe builds no sequence queues then and answers every request 503
        raise InvalidModel(
            "model-config.yaml: sequenceMaxIdleMSec must be a positive number of milliseconds "
            f"when sequenceBatching is true, got {config.get('sequenceMaxIdleMSec')!r}"
        )
    timeout = _positive_int(config, "sequenceTimeoutMSec", 1)
    return SequenceSettings(
        max_idle=idle / 1000,
        timeout=timeout / 1000 if timeout is not None else None,
        max_sequences=_positive_int(config, "maxNumSequence", 1) or 1,
        queue_size=_positive_int(config, "maxSequenceJobQueueSize", 1) or 1,
        continuous=_flag(config, "continuousBatching"),
    )
