"""Why this server does not pass a test, for the table (from the run in docs/torchserve-tests.md).

Keep each to one line; the doc says more.
"""

from __future__ import annotations

_TORCHVISION = (
    "its handler imports torchvision (not installed here; TorchServe fails it too) and it "
    "asserts the trained mnist weights' predictions (not in a snapshot)"
)
_SEQUENCE = "stateful sequence (continuous) batching: being built (TorchServe answers 503 here too)"
_ONNX = "needs onnx + onnxscript (torch.onnx.export), not installed here"
_METRICS = (
    "its handler (examples/custom_metrics) imports torchvision, so the model never loads on "
    "either side; metrics.yaml / metrics modes are being built"
)

REASONS: dict[str, str] = {
    "test_async_worker_comm.py::test_async_worker_comm": _TORCHVISION,
    "test_mnist_template.py::test_mnist_template": _TORCHVISION,
    "test_auto_recover.py::test_tp_inference": (
        "deliberate: a response timeout answers 504 (TorchServe 500); it also greps TorchServe's "
        "Java log lines (`Auto recovery ...`)"
    ),
    "test_startup_timeout.py::test_startup_timeout[5]": (
        "`startupTimeout` (and its Java log line `WorkerInitializationException`): being built"
    ),
    "test_parallelism.py::test_tp_inference": (
        "torchrun multi-process workers (`parallelType: tp`): not supported (TorchServe fails "
        "it here too)"
    ),
    "test_example_stateful_sequence_continuous_batching_http.py::test_infer_stateful_cancel": (
        _SEQUENCE
    ),
    "test_example_stateful_sequence_continuous_batching_http.py::"
    "test_infer_stateful_idle_timeout": _SEQUENCE,
    "test_example_stateful_sequence_continuous_batching_http.py::"
    "test_infer_stateful_session_timeout": _SEQUENCE,
    "test_onnx.py::test_convert_to_onnx": _ONNX,
    "test_onnx.py::test_model_packaging_and_start": f"{_ONNX} (no linear.onnx to archive)",
    "test_onnx.py::test_model_start": (
        f"{_ONNX}: with no onnx.mar, our `--start` exits 2 (a missing startup model is a "
        "config error here); TorchServe returns 0 at once and logs the failure"
    ),
    "test_metrics.py::test_metrics_log_mode": _METRICS,
    "test_metrics.py::test_metrics_prometheus_mode": _METRICS,
    "test_metrics.py::test_auto_detect_backend_metrics_log_mode": _METRICS,
    "test_metrics.py::test_auto_detect_backend_metrics_prometheus_mode": _METRICS,
    "test_metrics.py::test_metrics_legacy_mode": _METRICS,
    "test_metrics.py::test_collect_system_metrics_when_not_disabled": (
        "the system metrics (`CPUUtilization`, ...) in ts_metrics.log, TorchServe's log format: "
        "part of the metrics work being built"
    ),
}
