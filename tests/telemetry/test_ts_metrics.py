"""TorchServe's metrics configuration: a metrics.yaml, metrics_mode and auto-detection, seen
through /metrics (parsed as Prometheus does) and the server's log, with a handler written the
TorchServe way and archived by the real torch-model-archiver."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from handlers.metrics import MetricTypes
from serve.config.metrics import load_metrics_spec
from serve.telemetry.handler_metrics import HandlerMetrics
from serve.telemetry.metrics import ServerMetrics
from tests.helpers.clients import http, wait_until
from tests.helpers.server import Server, run_serve, server_config

HANDLER = """
    from ts.metrics.metric_type_enum import MetricTypes
    from ts.torch_handler.base_handler import BaseHandler


    class CountingHandler(BaseHandler):
        def initialize(self, context):
            self.context = context
            # declared in metrics.yaml and never added: TorchServe preloads model_metrics
            self.batch_gauge = context.metrics.get_metric("RequestBatchSize", MetricTypes.GAUGE)
            self.initialized = True

        def handle(self, data, context):
            metrics = context.metrics
            metrics.get_metric("InferenceRequestCount").add_or_update(len(data))
            self.batch_gauge.add_or_update(len(data), [context.model_name])
            metrics.add_metric("SizeHist", 0.3, "ms", metric_type=MetricTypes.HISTOGRAM)
            metrics.add_counter("Undeclared", 1)
            return [{"rows": len(data)} for _ in data]
"""

METRICS_YAML = """
dimensions:
  - &model_name "ModelName"
  - &level "Level"
  - &hostname "Hostname"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [*level, *hostname]
    - name: ts_inference_requests_total
      unit: Count
      dimensions: ["model_name", "model_version", "hostname"]
  gauge:
    - name: WorkerThreadTime
      unit: Milliseconds
      dimensions: [*level, *hostname]
    - name: GPUUtilization
      unit: Percent
      dimensions: [*level, "DeviceId", *hostname]
model_metrics:
  counter:
    - name: InferenceRequestCount
      unit: count
      dimensions: []
  gauge:
    - name: RequestBatchSize
      unit: count
      dimensions: [*model_name]
  histogram:
    - name: SizeHist
      unit: ms
      dimensions: [*model_name, *level]
"""


def _archive(tmp: Path, store: Path, name: str) -> None:
    (tmp / "handler.py").write_text(textwrap.dedent(HANDLER))
    archiver = shutil.which("torch-model-archiver", path=os.path.dirname(sys.executable))
    assert archiver is not None, "torch-model-archiver 0.12.0 is a test dependency"
    subprocess.run(
        [
            archiver, "--model-name", name, "--version", "1.0",
            "--handler", str(tmp / "handler.py"), "--export-path", str(store),
        ],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ts-metrics")
    store = root / "store"
    store.mkdir()
    _archive(root, store, "counting")
    (root / "metrics.yaml").write_text(METRICS_YAML)
    return store


def _families(server: Server) -> dict[str, Any]:
    status, body = http("GET", server.metrics + "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _predict(server: Server) -> None:
    status, body = http("POST", server.inference + "/predictions/counting", b"x")
    assert status == 200, body


def test_declared_metrics_appear_with_their_types_and_dimensions(store: Path) -> None:
    root = store.parent / "prometheus"
    root.mkdir()
    config = server_config(
        store, load_models=["counting.mar"], metrics_config=str(store.parent / "metrics.yaml")
    )
    server = Server(root, config)
    server.start()
    try:
        server.wait_ready()
        _predict(server)
        _predict(server)
        families = _families(server)
    finally:
        assert server.stop() == 0, server.log()
    host = {"Hostname": socket.gethostname()}
    count = families["InferenceRequestCount"]
    assert count.type == "counter"
    assert [(s.labels, s.value) for s in count.samples] == [(host, 2.0)]
    gauge = families["RequestBatchSize"]
    assert gauge.type == "gauge"
    assert [(s.labels, s.value) for s in gauge.samples] == [({"ModelName": "counting", **host}, 1)]
    hist = families["SizeHist"]
    assert hist.type == "histogram"
    by_name = {s.name: s for s in hist.samples if s.name != "SizeHist_bucket"}
    assert by_name["SizeHist_count"].value == 2
    assert by_name["SizeHist_count"].labels == {"ModelName": "counting", "Level": "Model", **host}
    assert "Torchserve prometheus histogram metric with unit: ms" in hist.documentation
    # undeclared: dropped, also the backend's HandlerTime/PredictionTime this file leaves out
    assert not {"Undeclared", "HandlerTime", "PredictionTime"} & set(families)
    assert "Handler metric 'Undeclared' is dropped" in server.log()
    # frontend: only the declared ones, each listed even without a value (no GPU here)
    assert families["Requests2XX"].samples[0].value >= 2
    assert families["WorkerThreadTime"].samples[0].value >= 0
    assert "GPUUtilization" in families
    assert not {"Requests4XX", "QueueTime", "ts_queue_latency_microseconds"} & set(families)
    assert "ts_inference_requests" in families  # the parser drops the _total of a counter
    assert "serve_executions" in families  # ours stay


def _properties(path: Path, config: dict[str, Any], **extra: str) -> Path:
    """A config.properties on the ports and store of `config` (server_config's), plus `extra`."""
    properties = {
        "inference_address": "http://" + config["inference_address"],
        "management_address": "http://" + config["management_address"],
        "metrics_address": "http://" + config["metrics_address"],
        "grpc_inference_port": config["grpc_inference_address"].rsplit(":", 1)[1],
        "grpc_management_port": config["grpc_management_address"].rsplit(":", 1)[1],
        "model_store": config["model_store"],
        "disable_token_authorization": "true",
        **extra,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    return path


def test_log_mode_writes_torchserve_lines_and_auto_detects(store: Path) -> None:
    """config.properties this time: metrics_mode=log with model_metrics_auto_detect=true."""
    root = store.parent / "log"
    root.mkdir()
    config = server_config(store)
    path = _properties(
        root / "config.properties",
        config,
        load_models="counting.mar",
        metrics_config=str(store.parent / "metrics.yaml"),
        metrics_mode="log",
        model_metrics_auto_detect="true",
    )
    server = Server(root, config, yaml_config=False)
    server.start("--ts-config", str(path))
    try:
        server.wait_ready()
        _predict(server)
        families = _families(server)
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    host = socket.gethostname()
    assert f"MODEL_METRICS: InferenceRequestCount.count:1.0|#|#hostname:{host},timestamp:" in log
    undeclared = f"Undeclared.count:1.0|#ModelName:counting,Level:Model|#hostname:{host},"
    assert f"MODEL_METRICS: {undeclared}" in log  # auto-detected
    assert f"TS_METRICS: Requests2XX.Count:1.0|#Level:Host|#hostname:{host},timestamp:" in log
    assert "TS_METRICS: ts_inference_requests_total.Count:1.0|#model_name:counting," in log
    assert "TS_METRICS: Requests4XX" not in log  # not declared in the file
    # log mode: nothing of TorchServe's on /metrics; our own figures remain
    assert not {"InferenceRequestCount", "Requests2XX", "ts_inference_requests"} & set(families)
    assert "serve_executions" in families


# a ts_metrics.log line: log4j2's `<ISO8601 date> - ` and the metric
SYSTEM_LINE = (
    r"^\d{{4}}-\d\d-\d\dT[\d:,]+ - "
    r"{name}\.{unit}:[0-9.e+-]+\|#Level:Host\|#hostname:{host},timestamp:\d+$"
)


def test_log_mode_writes_system_metrics_at_start_and_every_interval(store: Path) -> None:
    root = store.parent / "system"
    root.mkdir()
    config = server_config(store, metrics_mode="log", metric_time_interval=0.2)
    server = Server(root, config, env={"LOG_LOCATION": str(root / "logs")})
    server.start()
    host = re.escape(socket.gethostname())
    cpu = re.compile(SYSTEM_LINE.format(name="CPUUtilization", unit="Percent", host=host), re.M)
    metrics_file = root / "logs" / "ts_metrics.log"
    try:
        server.wait_ready()
        # the first round comes as the server starts, then one per metric_time_interval
        wait_until(lambda: len(cpu.findall(metrics_file.read_text())) >= 3)
    finally:
        assert server.stop() == 0, server.log()
    written = metrics_file.read_text()
    for name, unit in (
        ("MemoryUsed", "Megabytes"),
        ("MemoryAvailable", "Megabytes"),
        ("MemoryUtilization", "Percent"),
        ("DiskUsage", "Gigabytes"),
        ("DiskUtilization", "Percent"),
        ("DiskAvailable", "Gigabytes"),
    ):
        assert re.search(SYSTEM_LINE.format(name=name, unit=unit, host=host), written, re.M), name


def test_system_metrics_can_be_disabled_the_torchserve_way(store: Path) -> None:
    """TS_DISABLE_SYSTEM_METRICS with enable_envvars_config (TorchServe's test sets it so)."""
    root = store.parent / "no-system"
    root.mkdir()
    config = server_config(store)
    path = _properties(
        root / "config.properties",
        config,
        metrics_mode="log",
        metric_time_interval="1",
        enable_envvars_config="true",
    )
    server = Server(root, config, yaml_config=False, env={"TS_DISABLE_SYSTEM_METRICS": "true"})
    server.start("--ts-config", str(path))
    try:
        server.wait_ready()
        assert http("GET", server.inference + "/ping")[0] == 200
        # its Requests2XX line shows that the metric lines are written
        wait_until(lambda: "TS_METRICS: Requests2XX.Count:1.0" in server.log())
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    for name in ("CPUUtilization", "MemoryUsed", "DiskAvailable", "GPUUtilization"):
        assert f"TS_METRICS: {name}" not in log


def test_auto_detect_makes_undeclared_metrics_on_first_use(tmp_path: Path) -> None:
    (tmp_path / "metrics.yaml").write_text(METRICS_YAML)
    spec = load_metrics_spec(tmp_path / "metrics.yaml")
    for auto, expected in ((True, {"Undeclared"}), (False, set())):
        sink = HandlerMetrics(spec, auto_detect=auto)
        sink.record("Undeclared", "count", MetricTypes.COUNTER, [("Stage", "all")], 2.0)
        text = sink.render().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert names & {"Undeclared"} == expected
        assert {"InferenceRequestCount", "RequestBatchSize", "SizeHist"} <= names
    [family] = [
        f
        for f in text_string_to_metric_families(
            HandlerMetrics(spec, auto_detect=True).render().decode()
        )
        if f.name == "RequestBatchSize"
    ]
    assert family.samples == []  # declared, listed, no value yet


def test_legacy_mode_keeps_only_the_three_ts_counters() -> None:
    metrics = ServerMetrics(mode="legacy")
    metrics.statuses.add(200)
    names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
    assert {"ts_inference_requests", "ts_inference_latency_microseconds"} <= names
    assert "Requests2XX" not in names
    assert "serve_event_loop_lag_seconds" in names


BAD_FILES = {
    "not YAML": "model_metrics: [",
    "no model_metrics": "ts_metrics: {}\n",
    "unknown type": "model_metrics:\n  summary:\n    - {name: A, unit: ms, dimensions: []}\n",
    "no unit": "model_metrics:\n  gauge:\n    - {name: A, dimensions: []}\n",
    "bad name": "model_metrics:\n  gauge:\n    - {name: 'a b', unit: ms, dimensions: []}\n",
}


@pytest.mark.parametrize("case", ["not YAML", "unknown type", "no unit", "bad name"])
def test_a_bad_metrics_yaml_is_a_config_error_naming_the_key(tmp_path: Path, case: str) -> None:
    (tmp_path / "metrics.yaml").write_text(BAD_FILES[case])
    config = server_config(tmp_path, metrics_config="metrics.yaml")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    result = run_serve("--config", str(tmp_path / "serve.yaml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "metrics_config" in result.stderr


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_names_metrics_config(tmp_path: Path, case: str) -> None:
    from serve.config import ConfigError

    (tmp_path / "metrics.yaml").write_text(BAD_FILES[case])
    with pytest.raises(ConfigError) as caught:
        load_metrics_spec(tmp_path / "metrics.yaml")
    assert caught.value.key == "metrics_config"


def test_metrics_mode_is_checked_with_its_key(tmp_path: Path) -> None:
    config = server_config(tmp_path, metrics_mode="loud")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    result = run_serve("--config", str(tmp_path / "serve.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "metrics_mode" in result.stderr
