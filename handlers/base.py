"""`BaseHandler`: TorchServe's default handler behaviour.

`initialize` picks the device from `gpu_id` and loads the model: an eager model (the manifest's
`modelFile` class with the `serializedFile` state_dict), a TorchScript `.pt`, a `torch.export`
`.pt2`, or an `.onnx` file when onnxruntime is installed; then `torch.compile` when the
model-config's `pt2` asks for it (`compile_options`), and `index_to_name.json` into
`self.mapping`.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from handlers.context import Context
from handlers.util import list_classes_from_module, load_label_mapping, load_private_module

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def timed(func: F) -> F:
    """Record the call's duration as `ts_handler_<name>` when model-config sets handler.profile."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _profiling(self):
            return func(self, *args, **kwargs)
        start = time.perf_counter()
        result = func(self, *args, **kwargs)
        context = getattr(self, "context", None)
        if context is not None and context.metrics is not None:
            elapsed = (time.perf_counter() - start) * 1000
            context.metrics.add_time(f"ts_handler_{func.__name__}", elapsed, None, "ms")
        return result

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _profiling(handler: Any) -> bool:
    """Whether the handler's model-config asks for `handler: {profile: true}` (read once)."""
    cached = handler.__dict__.get("_ts_profile")
    if cached is None:
        config = getattr(handler, "model_yaml_config", None) or {}
        section = config.get("handler") if isinstance(config, dict) else None
        cached = bool(isinstance(section, dict) and section.get("profile"))
        if getattr(handler, "initialized", False):
            handler.__dict__["_ts_profile"] = cached
    return bool(cached)


class BaseHandler(abc.ABC):  # noqa: B024 (TorchServe's BaseHandler is an ABC too)
    """Loads a TorchScript or eager model; preprocess → inference → postprocess per batch."""

    def __init__(self) -> None:
        self.model: Any = None
        self.mapping: dict[str, str] | None = None
        self.device: torch.device | None = None
        self.initialized = False
        self.context: Context | None = None
        self.model_pt_path: str | None = None
        self.manifest: dict[str, Any] | None = None
        self.map_location: str | None = None
        self.explain = False
        self.target = 0
        self.model_yaml_config: dict[str, Any] = {}

    def initialize(self, context: Context) -> None:
        """Pick the device and load the model named by the manifest."""
        self.context = context
        self.model_yaml_config = getattr(context, "model_yaml_config", None) or {}
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.map_location = "cuda"
            self.device = torch.device(f"cuda:{gpu_id}")
        elif gpu_id is not None and torch.backends.mps.is_available():
            self.map_location = "mps"
            self.device = torch.device("mps")
        else:
            self.map_location = "cpu"
            self.device = torch.device("cpu")

        self.manifest = context.manifest or {}
        model_dir = str(properties.get("model_dir"))
        model_info = self.manifest.get("model", {})
        serialized = model_info.get("serializedFile")
        self.model_pt_path = os.path.join(model_dir, serialized) if serialized else None
        model_file = model_info.get("modelFile", "")

        if model_file:
            self.model = self._load_pickled_model(model_dir, model_file, self.model_pt_path)
            self.model.to(self.device)
            self.model.eval()
        elif self.model_pt_path is None:
            raise RuntimeError(
                "No model weights could be loaded: the manifest names no serializedFile"
            )
        elif self.model_pt_path.endswith(".pt"):
            self.model = self._load_torchscript_model(self.model_pt_path)
            self.model.eval()
        elif self.model_pt_path.endswith(".pt2"):
            self.model = torch.export.load(self.model_pt_path).module().to(self.device)
        elif self.model_pt_path.endswith(".onnx") and importlib.util.find_spec("onnxruntime"):
            self.model = self._load_onnx(self.model_pt_path)
        else:
            raise RuntimeError(f"No model weights could be loaded from {serialized!r}")

        self._maybe_compile()
        self.mapping = load_label_mapping(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True

    def _load_torchscript_model(self, model_pt_path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(model_pt_path, map_location=self.device)  # type: ignore[no-untyped-call]

    def _load_pickled_model(
        self, model_dir: str, model_file: str, model_pt_path: str | None
    ) -> Any:
        """Instantiate the single class of `model_file` and load the state_dict into it."""
        model_def_path = os.path.join(model_dir, model_file)
        if not os.path.isfile(model_def_path):
            raise RuntimeError(f"Missing the model file {model_file}")
        module = load_private_module(model_def_path, "model")
        classes = list_classes_from_module(module)
        if len(classes) != 1:
            raise ValueError(f"Expected only one class as model definition. {classes}")
        model = classes[0]()
        if model_pt_path:
            state_dict = torch.load(model_pt_path, map_location=self.device)
            model.load_state_dict(state_dict)
        return model

    def _load_onnx(self, path: str) -> Any:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.map_location == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(path, providers=providers)

    def _maybe_compile(self) -> None:
        options = compile_options(self.model_yaml_config.get("pt2"))
        if options is None:
            return
        # TorchServe's wording: its tests and users grep model_log for it
        described = ", ".join(f"{key} {value}" for key, value in options.items())
        try:
            self.model = torch.compile(self.model, **options)
            logger.info("Compiled model with %s", described)
        except Exception:
            logger.warning(
                "Compiling model with %s has failed; proceeding without compilation",
                described,
                exc_info=True,
            )

    @timed
    def preprocess(self, data: Any) -> Any:
        """Turn the request inputs into a tensor."""
        return torch.as_tensor(data, device=self.device)

    @timed
    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the model under `torch.inference_mode`."""
        with torch.inference_mode():
            return self.model(data.to(self.device), *args, **kwargs)

    @timed
    def postprocess(self, data: Any) -> Any:
        """Turn the model output into a list, one entry per request."""
        return data.tolist()

    def handle(self, data: list[dict[str, Any]], context: Context) -> Any:
        """Entry point: describe, explain, or preprocess → inference → postprocess."""
        start = time.time()
        self.context = context
        if self._is_describe():
            output = [self.describe_handle()]
        else:
            preprocessed = self.preprocess(data)
            if self._is_explain():
                output = self.explain_handle(preprocessed, data)
            else:
                output = self.postprocess(self.inference(preprocessed))
        if context.metrics is not None:
            context.metrics.add_time(
                "HandlerTime", round((time.time() - start) * 1000, 2), None, "ms"
            )
        return output

    def explain_handle(self, data_preprocess: Any, raw_data: list[dict[str, Any]]) -> Any:
        """Captum explanations via `get_insights`, which a subclass provides."""
        row = raw_data[0]
        inputs = row.get("data") or row.get("body") if isinstance(row, dict) else None
        target = (row.get("target") if isinstance(row, dict) else None) or 0
        get_insights = getattr(self, "get_insights", None)
        if get_insights is None:
            raise NotImplementedError(
                "this handler does not implement get_insights for explanations"
            )
        return get_insights(data_preprocess, inputs, target)

    def _is_explain(self) -> bool:
        if self.context is not None and self.context.get_request_header(0, "explain") == "True":
            self.explain = True
            return True
        return False

    def _is_describe(self) -> bool:
        return self.context is not None and self.context.get_request_header(0, "describe") == "True"

    def describe_handle(self) -> Any:
        """Custom metadata for `GET /models/{m}?customized=true`; None by default."""
        return None

    def get_device(self) -> torch.device | None:
        """The device this handler runs on."""
        return self.device


def compile_options(pt2: Any) -> dict[str, Any] | None:
    """`torch.compile`'s options from model-config `pt2`, or None when it asks for none.

    TorchServe 0.12's forms: `{compile: {enable: true, backend: ..., ...}}`, and the deprecated
    `"inductor"` (a backend name) and `{backend: ..., mode: ...}` (the options themselves).
    `{export: ...}` is an AOTInductor package, loaded elsewhere, not compiled.
    """
    if pt2 is None:
        return None
    if isinstance(pt2, str):
        options: dict[str, Any] = {"backend": pt2}
    elif not isinstance(pt2, dict):
        raise ValueError(f"model-config pt2 should be a backend name or a mapping, not {pt2!r}")
    elif "compile" in pt2:
        compile_ = pt2["compile"]
        if not isinstance(compile_, dict) or compile_.get("enable") is not True:
            return None
        return {key: value for key, value in compile_.items() if key != "enable"}
    elif "export" in pt2:
        return None
    else:
        options = dict(pt2)
    logger.warning(
        "model-config pt2 as %r is deprecated; use pt2: {compile: {enable: true, ...}}", pt2
    )
    return options
