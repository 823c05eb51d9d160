"""TorchServe's per-GPU gauges, rendered from figures (no GPU here) and parsed like Prometheus."""

from __future__ import annotations

import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.telemetry.host import GpuFigures, HostFigures, HostReader, visible_devices
from serve.telemetry.torchserve import StatusCounts, render
from serve.workers.devices import visible_gpu_count


def test_gpu_gauges_carry_torchserve_names_and_labels() -> None:
    host = HostFigures(
        gpus=(GpuFigures(0, 12.5, 2048.0, 80.0), GpuFigures(1, 50.0, 8192.0, 3.0)),
    )
    text = render(StatusCounts(), None, (), host).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "GPUMemoryUtilization": {"0": 12.5, "1": 50.0},
        "GPUMemoryUsed": {"0": 2048.0, "1": 8192.0},
        "GPUUtilization": {"0": 80.0, "1": 3.0},
    }
    for name, by_device in expected.items():
        assert families[name].type == "gauge"
        samples = families[name].samples
        assert {s.labels["DeviceId"]: s.value for s in samples} == by_device
        assert {s.labels["Level"] for s in samples} == {"Host"}
        assert {s.labels["Hostname"] for s in samples} == {socket.gethostname()}


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:
        return False
    return True


def test_gpu_figures_come_from_nvml_or_not_at_all() -> None:
    figures = HostReader(gpu_count=2).read()
    assert figures.memory is not None
    if not _nvml_works():  # no driver (as on CI): the GPU gauges are left out, nothing fails
        assert figures.gpus == ()
        return
    assert len(figures.gpus) <= 2
    assert all(0 <= g.utilization_percent <= 100 for g in figures.gpus)


def test_status_classes_are_counted_as_torchserve_does() -> None:
    statuses = StatusCounts()
    for status in (200, 201, 204, 302, 101, 400, 404, 413, 500, 503, 504):
        statuses.add(status)
    assert statuses.counts == [3, 3, 3]


def test_cuda_visible_devices_is_read_once_for_figures_and_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_devices() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 2, ,0 ")
    assert visible_devices() == ("2", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpu_count() == 0  # "-1" hides every GPU, with or without a driver
