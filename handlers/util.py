"""Helpers TorchServe handlers use (`ts.utils.util`)."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

logger = logging.getLogger(__name__)

# TorchServe's ts.utils.util.PT2Backend values: the backends BaseHandler passes to torch.compile
PT2_BACKENDS = (
    "eager", "aot_eager", "inductor", "nvfuser", "aot_nvfuser", "aot_cudagraphs", "ofi", "fx2trt",
    "onnxrt", "ipex", "torchxla_trace_once", "openvino", "tensorrt", "hpu_backend",
)  # fmt: skip


def list_classes_from_module(module: ModuleType, parent_class: type | None = None) -> list[type]:
    """The classes defined in `module` itself (optionally only subclasses of parent_class)."""
    classes = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    if parent_class is not None:
        return [c for c in classes if issubclass(c, parent_class)]
    return classes


def load_label_mapping(mapping_file_path: str) -> dict[str, str] | None:
    """Read `index_to_name.json` ({"0": "cat"} or {"0": ["n0", "cat"]}); None if missing."""
    if not os.path.isfile(mapping_file_path):
        logger.warning(
            "%r is missing. Inference output will not include class name.", mapping_file_path
        )
        return None
    with open(mapping_file_path, encoding="utf-8") as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise ValueError('index->name JSON mapping should be in "class": "label" format.')
    if "object_type_names" in mapping and isinstance(mapping["object_type_names"], list):
        return {str(k): v for k, v in enumerate(mapping["object_type_names"])}
    result: dict[str, str] = {}
    for key, value in mapping.items():
        label = value[-1] if isinstance(value, list) and value else value
        if not isinstance(label, str):
            raise ValueError("labels in index->name mapping must be either str or List[str]")
        result[str(key)] = label
    return result


def map_class_to_label(
    probs: list[list[float]],
    mapping: dict[str, str] | None = None,
    lbl_classes: Iterable[Iterable[Any]] | None = None,
) -> list[dict[str, float]]:
    """[{label: probability}] per row, labels from `mapping` or the class index."""
    if not isinstance(probs, list):
        raise TypeError("Convert classes to list before doing mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise TypeError("Mapping must be a dict")
    if lbl_classes is None:
        lbl_classes = itertools.repeat(range(len(probs[0])), len(probs))
    return [
        {
            (mapping[str(cls)] if mapping is not None else str(cls)): prob
            for cls, prob in zip(classes, row, strict=False)
        }
        for classes, row in zip(lbl_classes, probs, strict=False)
    ]


def handler_section(context: Any) -> dict[str, Any]:
    """The `handler:` section of the model's model-config.yaml ({} when absent)."""
    config = getattr(context, "model_yaml_config", None) or {}
    section = config.get("handler") if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def get_yaml_config(yaml_file_path: str) -> dict[str, Any]:
    """Read a YAML file into a dict."""
    with open(yaml_file_path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    return loaded if isinstance(loaded, dict) else {}


_private_modules = itertools.count()
# The private modules each thread loaded: an executor loads its handler in its own thread and
# forgets them when it exits, so registering and unregistering models does not grow sys.modules.
_loaded_here = threading.local()


def load_private_module(path: str | Path, kind: str) -> ModuleType:
    """Import a file under a name of its own (`_serve_<kind>_<n>_<stem>`).

    Two models (or two executors) may ship files of the same name; each gets its own module,
    so neither sees the other's code or module-level state.
    """
    path = Path(path)
    name = f"_serve_{kind}_{next(_private_modules)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path.name}", path=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if not hasattr(_loaded_here, "names"):
        _loaded_here.names = []
    _loaded_here.names.append(name)
    return module


def forget_private_modules() -> None:
    """Drop the private modules this thread loaded from sys.modules (the thread is done)."""
    for name in getattr(_loaded_here, "names", ()):
        sys.modules.pop(name, None)
    _loaded_here.names = []
