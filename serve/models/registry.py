"""The registry: model name → versions (one default), and registration from the model store.

A version's effective settings (which source wins, key by key) are `models.settings`' rules.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from handlers.loader import remove_from_path
from serve.config import Config
from serve.errors import (
    BadRequest,
    Conflict,
    InternalError,
    InvalidModel,
    InvalidModelVersion,
    ModelNotFound,
    ModelVersionNotFound,
)
from serve.models.archive import ModelArchive, check_model_name, locate, open_archive
from serve.models.download import fetch_archive, remove_download, url_scheme
from serve.models.hints import unknown_model
from serve.models.requirements import install_requirements
from serve.models.settings import effective_settings
from serve.models.version import ModelVersion
from serve.request import InferenceRequest
from serve.routing.shadow import Shadows
from serve.routing.split import Split
from serve.telemetry.metrics import ServerMetrics
from serve.workers.intraop import ThreadBudget

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegisterParams:
    """A registration request (REST query/JSON, gRPC, or a startup model)."""

    url: str
    model_name: str | None = None
    handler: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    max_workers: int | None = None
    response_timeout: float | None = None
    synchronous: bool = True
    startup_timeout: float | None = None  # None: the server's default_startup_timeout
    loaded_at_startup: bool = False
    # not synchronous, and the caller starts the workers (`start_workers`) when it is time
    defer_workers: bool = False
    make_default: bool = False  # the new version becomes the one unversioned requests get


@dataclass(slots=True)
class Model:
    """All versions of one model name, which one is the default, and its traffic split."""

    versions: dict[str, ModelVersion] = field(default_factory=dict)
    default: str = ""
    split: Split | None = None
    shadows: Shadows = field(init=False)

    def __post_init__(self) -> None:
        self.shadows = Shadows(self.versions)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one inference request goes: the version, and whether the split chose it."""

    version: ModelVersion
    routed: bool
    model: Model

    def submit(self, request: InferenceRequest) -> None:
        """Queue `request` (or refuse it), then copy a routed one to the split's shadows."""
        self.version.batcher.submit(request)
        split = self.model.split
        if self.routed and split is not None:
            self.model.shadows.shadow(request, self.version, split)


@dataclass(frozen=True, slots=True)
class Registered:
    """The outcome of a registration."""

    version: ModelVersion
    workers: int
    all_ready: bool


class Registry:
    """Registered models; every method runs on the event loop."""

    def __init__(
        self,
        config: Config,
        *,
        gpu_count: int,
        budget: ThreadBudget,
        metrics: ServerMetrics,
    ) -> None:
        self.config = config
        self.gpu_count = gpu_count
        self.models: dict[str, Model] = {}
        self._budget = budget
        self._metrics = metrics
        self._workdir = Path(tempfile.mkdtemp(prefix="serve-models-"))
        # archives saved from a URL, deleted from the store on unregister as TorchServe does
        self._downloads: dict[ModelVersion, Path] = {}
        # called after each management change (snapshots listen here)
        self.listeners: list[Callable[[], None]] = []

    def changed(self) -> None:
        """Tell the listeners that what is registered has changed."""
        for listener in self.listeners:
            listener()

    # --- lookups ---------------------------------------------------------------------------

    def holds(self, version: ModelVersion) -> bool:
        """Whether this very version is still registered (a racing unregister removes it)."""
        model = self.models.get(version.name)
        return model is not None and model.versions.get(version.version) is version

    def route(self, name: str, version: str | None, key: str | None) -> Route:
        """Where an inference request goes: the version it names (never redirected), else
        the version the model's traffic split picks (sticky by the routing `key`), else the
        default."""
        model = self._model(name)
        split = model.split
        routed = not version and split is not None
        if not version:
            version = split.choose(key) if split is not None else model.default
        return Route(_version_of(model, name, version), routed, model)

    def version(self, name: str, version: str | None = None) -> ModelVersion:
        """The named version of a model, else its default; the traffic split plays no part
        (management, metadata and readiness describe the default, not a drawn version)."""
        return self._find(name, version)[2]

    def _find(self, name: str, version: str | None) -> tuple[Model, str, ModelVersion]:
        model = self._model(name)
        key = version or model.default
        return model, key, _version_of(model, name, key)

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(unknown_model(name, self.models))
        return model

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, default first."""
        model = self._model(name)
        default = model.versions[model.default]
        return [default, *(v for k, v in sorted(model.versions.items()) if k != model.default)]

    def default_versions(self) -> list[ModelVersion]:
        """The default version of every model, sorted by model name."""
        return [m.versions[m.default] for _, m in sorted(self.models.items())]

    # --- registration ----------------------------------------------------------------------

    async def register(self, params: RegisterParams) -> Registered:
        """Open the archive, add the version, start its workers (and wait if synchronous)."""
        store, workdir = self.config.model_store, self._workdir
        scheme = url_scheme(params.url)
        downloaded: Path | None = None
        if scheme is not None:
            downloaded = await fetch_archive(params.url, scheme, self.config)
        try:
            source = downloaded
            if source is None:
                source = await asyncio.to_thread(locate, store, params.url)
            archive = await asyncio.to_thread(open_archive, source, workdir)
            try:
                archive = await install_requirements(
                    archive, enabled=self.config.install_py_dep_per_model, workdir=self._workdir
                )
                version = self._add(archive, params)
            except BaseException:
                await asyncio.to_thread(archive.remove)
                raise
        except BaseException:
            if downloaded is not None:  # a failed registration leaves no download behind
                await asyncio.to_thread(remove_download, downloaded)
            raise
        if downloaded is not None:
            self._downloads[version] = downloaded
            version.store_name = downloaded.name
        workers = version.min_workers
        logger.info(
            "Registered %s from %s (batch_size=%d, max_batch_delay=%dms, workers=%d, devices=%s)",
            version.label,
            params.url,
            version.settings.batch_size,
            version.settings.max_batch_delay,
            workers,
            [("cpu" if d is None else d) for d in version.settings.devices],
        )
        if params.defer_workers:
            return Registered(version, workers, all_ready=False)
        if not params.synchronous:
            await version.scale(workers, version.max_workers, wait=None)
            return Registered(version, workers, all_ready=False)
        ready = await version.scale(workers, version.max_workers, wait=version.load_wait)
        if not ready:
            if not self.holds(version):
                raise Conflict(
                    f"Model {version.name} version {version.version} was unregistered by "
                    "another request while its workers were starting"
                )
            reason = version.pool.last_error or "the workers did not load in time"
            await self.unregister(version.name, version.version, force=True)
            raise InternalError(
                f"Failed to start workers for model {version.name} "
                f"version: {version.version}: {reason}"
            )
        return Registered(version, workers, all_ready=True)

    def _add(self, archive: ModelArchive, params: RegisterParams) -> ModelVersion:
        name = check_model_name(params.model_name or archive.name)
        handler = params.handler or archive.handler
        if not handler:
            raise InvalidModel(
                "The archive's manifest names no handler; pass handler= or build it with --handler"
            )
        model = self.models.get(name)
        if model is not None and archive.version in model.versions:
            raise Conflict(
                f"Model version {archive.version} is already registered for model {name}"
            )
        version = ModelVersion(
            archive=archive,
            name=name,
            handler=handler,
            url=params.url,
            settings=effective_settings(
                params,
                self.config.model_settings(name, archive.version),
                archive.settings,
                self.config,
                self.gpu_count,
            ),
            budget=self._budget,
            metrics=self._metrics,
            loaded_at_startup=params.loaded_at_startup,
        )
        if model is None:
            model = self.models[name] = Model(default=archive.version)
        model.versions[archive.version] = version
        if params.make_default or self.config.model_settings(name, archive.version).default_version:
            model.default = archive.version
        return version

    # --- changes ---------------------------------------------------------------------------

    def set_default(self, name: str, version: str) -> None:
        """Make `version` the one `/predictions/{name}` serves; this ends a traffic split."""
        model, key, _ = self._find(name, version)
        model.default = key
        if model.split is not None:
            logger.info("Model %s: set-default to %s cleared its traffic split", name, key)
            model.split = None

    # --- traffic split -------------------------------------------------------------------

    def traffic(self, name: str) -> Split | None:
        """A model's traffic split (None: its default version takes all unversioned traffic)."""
        return self._model(name).split

    def set_traffic(self, name: str, split: Split) -> None:
        """Route the model's unversioned traffic by `split` (every version must be registered)."""
        model = self._model(name)
        unknown = sorted(split.versions - model.versions.keys())
        if unknown:
            raise BadRequest(
                f"Model {name} has no version {', '.join(unknown)}; registered versions: "
                f"{', '.join(sorted(model.versions))}"
            )
        model.split = split
        logger.info("Model %s: traffic split set to %s", name, split.to_dict())

    def clear_traffic(self, name: str) -> None:
        """Send the model's unversioned traffic to its default version alone again."""
        self._model(name).split = None

    async def unregister(
        self, name: str, version: str | None = None, *, force: bool = False
    ) -> None:
        """Remove a version at once (new requests get 404), then drain it and stop its workers."""
        model, key, found = self._find(name, version)
        if key == model.default and len(model.versions) > 1 and not force:
            raise InvalidModelVersion(f"Cannot remove default version for model {name}")
        split = model.split
        if split is not None and key in split.versions:
            remaining = split.without(key)
            if remaining is None and not force and len(model.versions) > 1:
                raise InvalidModelVersion(
                    f"Cannot remove version {key} of model {name}: it is the last version "
                    "with a weight in the traffic split; change the split or DELETE it first"
                )
            model.split = remaining
        del model.versions[key]
        if not model.versions:
            del self.models[name]
        elif key == model.default:
            model.default = sorted(model.versions)[0]
        await found.close()
        downloaded = self._downloads.pop(found, None)
        if downloaded is not None:
            await asyncio.to_thread(remove_download, downloaded)
        if not any(v.archive.model_dir == found.archive.model_dir for v in self._all()):
            remove_from_path(found.archive.model_dir)
        if found.archive.deps_dir is not None:
            remove_from_path(found.archive.deps_dir)
        logger.info("Unregistered %s", found.label)

    async def start_workers(self, versions: list[ModelVersion]) -> None:
        """Start the workers of versions registered with `defer_workers` (still registered)."""
        for version in versions:
            if self.holds(version):
                await version.scale(version.min_workers, version.max_workers, wait=None)

    def loading(self) -> list[str]:
        """`name/version` of each version with an executor still loading its handler."""
        return [
            f"{v.name}/{v.version}"
            for v in self._all()
            if any(e.state == "LOADING" for e in v.pool.executors)
        ]

    def _all(self) -> list[ModelVersion]:
        return [v for m in self.models.values() for v in m.versions.values()]

    async def close(self) -> None:
        """Drain and stop every model version."""
        versions = self._all()
        self.models.clear()
        await asyncio.gather(*(v.close() for v in versions), return_exceptions=True)
        await asyncio.to_thread(_remove_tree, self._workdir)


def _version_of(model: Model, name: str, key: str) -> ModelVersion:
    """Version `key` of `model` (registered as `name`), or a 404 naming both."""
    found = model.versions.get(key)
    if found is None:
        raise ModelVersionNotFound(f"Model version: {key} does not exist for model: {name}")
    return found


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
