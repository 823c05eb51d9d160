"""Which of pytorch/serve v0.12.0's `test/pytest` tests run black-box, offline, on a CPU.

The list is reference/torchserve-gaps.md §9.1: every other file downloads weights or archives,
needs TorchServe's internals (`MockContext`), or a GPU. Ids are relative to `test/pytest`.
"""

from __future__ import annotations

_METRICS = (
    "test_metrics_log_mode",
    "test_metrics_prometheus_mode",
    "test_auto_detect_backend_metrics_log_mode",
    "test_auto_detect_backend_metrics_prometheus_mode",
    "test_metrics_legacy_mode",
    "test_collect_system_metrics_when_not_disabled",
    "test_disable_system_metrics_using_config_properties",
    "test_disable_system_metrics_using_environment_variable",
)
_COMPILE = (
    "test_archive_model_artifacts",
    "test_start_torchserve",
    "test_server_status",
    "test_registered_model",
    "test_serve_inference",
)

# whole files first, then the usable tests of files whose other tests need internet/internals
TESTS: tuple[str, ...] = (
    "test_async_worker_comm.py",
    "test_auto_recover.py",
    "test_handler_traceback_logging.py",
    "test_mnist_template.py",
    "test_model_config.py",
    "test_send_intermediate_prediction_response.py",
    "test_url_path.py",
    "test_startup_timeout.py",
    "test_parallelism.py",
    "test_example_stateful_sequence_batching_http.py",
    "test_example_stateful_sequence_continuous_batching_http.py",
    "test_onnx.py",
    *(f"test_metrics.py::{name}" for name in _METRICS),
    *(f"test_torch_compile.py::TestTorchCompile::{name}" for name in _COMPILE),
    "test_gRPC_allowed_urls.py::test_gRPC_allowed_urls_relative_path",
    "test_gRPC_model_control.py::test_grpc_register_model_with_model_control",
)
