"""Loads a handler entry point the way TorchServe's model loader does, once per executor.

A handler string is `module[:function]`. The module is a `.py` file in the model folder
(loaded under a name private to the executor, so module-level state is per executor as it is
per worker process under TorchServe), an importable module, or a built-in handler name.
A module-level function (default `handle`) wins over a class; otherwise the module must define
exactly one class, which is instantiated and initialized.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from handlers import compat
from handlers.context import Context
from handlers.errors import HandlerLoadError
from handlers.metrics import MetricsCache, MetricSink
from handlers.service import Service
from handlers.tensor import TensorHandler
from handlers.ts import __version__ as ts_version
from handlers.util import load_private_module

logger = logging.getLogger(__name__)

BUILTIN_HANDLERS = {
    "base_handler": "handlers.base",
    "image_classifier": "handlers.image_classifier",
    "image_segmenter": "handlers.image_segmenter",
    "object_detector": "handlers.object_detector",
    "text_classifier": "handlers.text_classifier",
    "text_generation": "handlers.text_generation",
}
SERVER_VERSION = ts_version  # TorchServe's, as handlers see it in context

_path_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """Everything needed to load one handler instance in an executor thread."""

    model_name: str
    model_dir: Path
    manifest: dict[str, Any]
    handler: str
    gpu_id: int | None
    batch_size: int
    yaml_config: dict[str, Any]
    metric_sink: MetricSink
    limit_max_image_pixels: bool = True
    python_paths: tuple[Path, ...] = ()  # the model's own packages, importable after model_dir
    continuous: bool = False  # driven by a step scheduler (handlers.steps), not batch by batch
    iterative: bool = False  # requests may stay across calls (`stopping_criteria` is honoured)


def load_service(spec: ServiceSpec) -> Service:
    """Import the handler, build its Context, and run its initialization (in this thread)."""
    compat.install()
    for folder in spec.python_paths:
        add_to_path(folder)
    add_to_path(spec.model_dir)
    context = Context(
        spec.model_name,
        str(spec.model_dir),
        spec.manifest,
        spec.batch_size,
        spec.gpu_id,
        SERVER_VERSION,
        spec.limit_max_image_pixels,
        MetricsCache(spec.metric_sink, spec.model_name),
        spec.yaml_config,
    )
    entry, initialize = _entry_point(spec.handler, spec.model_dir)
    initialize(context)
    owner = getattr(entry, "__self__", None)
    service = Service(entry, context, owner if isinstance(owner, TensorHandler) else None)
    service.continuous = spec.continuous
    release = getattr(owner, "release_sequences", None)
    if callable(release):
        service.releaser = release
    probe = getattr(owner, "kv_cache_usage", None)
    if callable(probe):
        service.kv_probe = probe
    service.iterative = spec.iterative
    return service


def add_to_path(model_dir: Path) -> None:
    """Make the model folder importable (handlers import their sibling files)."""
    folder = str(model_dir)
    with _path_lock:
        if folder not in sys.path:
            sys.path.insert(0, folder)


def remove_from_path(model_dir: Path) -> None:
    """Forget a model folder once its model is unregistered."""
    folder = str(model_dir)
    with _path_lock:
        while folder in sys.path:
            sys.path.remove(folder)


def _entry_point(
    handler: str, model_dir: Path
) -> tuple[Callable[[Any, Context], Any], Callable[[Context], Any]]:
    module_part, _, function_name = handler.partition(":")
    module = _import(module_part, model_dir)
    name = function_name or "handle"
    function = getattr(module, name, None)
    if function is not None:
        if not callable(function):
            raise HandlerLoadError(f"{name!r} in handler {handler!r} is not callable")

        def initialize(context: Context) -> Any:
            return function(None, context)

        return function, initialize
    if function_name:
        raise HandlerLoadError(f"handler module {module_part!r} has no function {function_name!r}")
    classes = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    if len(classes) != 1:
        raise HandlerLoadError(
            "Expected only one class in custom service code or a function entry point "
            f"{[c.__name__ for c in classes]} in handler {handler!r}"
        )
    try:
        instance: Any = classes[0]()
    except Exception as exc:
        raise HandlerLoadError(f"creating {classes[0].__name__}() failed: {exc}") from exc
    if not callable(getattr(instance, "handle", None)):
        raise HandlerLoadError(f"Expect handle method in class {classes[0].__name__}")
    init = getattr(instance, "initialize", None)
    return instance.handle, (init if callable(init) else _no_initialize)


def _no_initialize(context: Context) -> None:
    return None


def _import(module_part: str, model_dir: Path) -> ModuleType:
    module_name = module_part.removesuffix(".py").replace("\\", "/").split("/")[-1]
    if not module_name:
        raise HandlerLoadError(f"invalid handler {module_part!r}")
    local = model_dir / f"{module_name}.py"
    if local.is_file():
        return load_private_module(local, "handler")
    if module_name in BUILTIN_HANDLERS:
        return importlib.import_module(BUILTIN_HANDLERS[module_name])
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise HandlerLoadError(
            f"handler {module_part!r} is neither a file in the archive, an importable module, "
            f"nor a built-in handler ({', '.join(BUILTIN_HANDLERS)})"
        ) from exc
