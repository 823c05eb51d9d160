"""The settings precedence, row by row: request vs serve.yaml `models:` vs model-config.yaml vs
server defaults, and the devices and default worker counts with and without GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import pytest

from serve.config import Config, ModelSettings
from serve.models.archive import ArchiveSettings
from serve.models.registry import RegisterParams
from serve.models.settings import effective_settings


@dataclass(frozen=True)
class Row:
    """One case: what each source says, and the settings fields that must come out."""

    expected: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)
    operator: ModelSettings = field(default_factory=ModelSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    config: Config = field(default_factory=Config)
    gpus: int = 0


class _Layers(TypedDict):
    """One value per layer, splatted into a `Row`."""

    request: dict[str, Any]
    operator: ModelSettings
    archive: ArchiveSettings


ALL_SET = _Layers(
    request={"batch_size": 8, "max_batch_delay": 5, "response_timeout": 3.0},
    operator=ModelSettings(batch_size=4, max_batch_delay=20, response_timeout=30.0),
    archive=ArchiveSettings(batch_size=2, max_batch_delay=50, response_timeout=60.0),
)

ROWS = {
    "server defaults": Row(
        {
            "batch_size": 1,
            "max_batch_delay": 100,
            "response_timeout": 120.0,
            "job_queue_size": 100,
            "min_workers": 1,
            "max_workers": 1,
            "devices": (None,),
            "device_type": "cpu",
            "adaptive_batching": True,
        }
    ),
    "server config defaults": Row(
        {"response_timeout": 9.0, "job_queue_size": 7, "adaptive_batching": False},
        config=Config(default_response_timeout=9.0, job_queue_size=7, adaptive_batching=False),
    ),
    "request wins over all": Row(
        {"batch_size": 8, "max_batch_delay": 5, "response_timeout": 3.0}, **ALL_SET
    ),
    "operator wins over archive": Row(
        {"batch_size": 4, "max_batch_delay": 20, "response_timeout": 30.0},
        operator=ALL_SET["operator"],
        archive=ALL_SET["archive"],
    ),
    "archive wins over defaults": Row(
        {"batch_size": 2, "max_batch_delay": 50, "response_timeout": 60.0},
        archive=ALL_SET["archive"],
    ),
    "archive job queue wins over the server's": Row(
        {"job_queue_size": 3},
        archive=ArchiveSettings(job_queue_size=3),
        config=Config(job_queue_size=7),
    ),
    # workers
    "request initial workers": Row(
        {"min_workers": 3, "max_workers": 3}, request={"initial_workers": 3}
    ),
    "request max workers above min": Row(
        {"min_workers": 2, "max_workers": 5}, request={"initial_workers": 2, "max_workers": 5}
    ),
    "max workers never below min": Row(
        {"min_workers": 4, "max_workers": 4}, request={"initial_workers": 4, "max_workers": 1}
    ),
    "archive pair wins over request initial workers": Row(
        {"min_workers": 2, "max_workers": 4},
        request={"initial_workers": 6},
        archive=ArchiveSettings(min_workers=2, max_workers=4),
    ),
    "archive min alone is a pair": Row(
        {"min_workers": 2, "max_workers": 2},
        request={"initial_workers": 6},
        archive=ArchiveSettings(min_workers=2),
    ),
    "archive pair with max below min is ignored": Row(
        {"min_workers": 6, "max_workers": 6},
        request={"initial_workers": 6},
        archive=ArchiveSettings(min_workers=3, max_workers=1),
    ),
    "archive pair with min 0 is ignored": Row(
        {"min_workers": 6, "max_workers": 6},
        request={"initial_workers": 6},
        archive=ArchiveSettings(min_workers=0, max_workers=4),
    ),
    "operator wins over the archive pair": Row(
        {"min_workers": 1, "max_workers": 3},
        request={"initial_workers": 6},
        operator=ModelSettings(min_workers=1, max_workers=3),
        archive=ArchiveSettings(min_workers=2, max_workers=4),
    ),
    "request max workers wins over operator max": Row(
        {"min_workers": 1, "max_workers": 8},
        request={"max_workers": 8},
        operator=ModelSettings(min_workers=1, max_workers=3),
    ),
    "operator max over archive max": Row(
        {"min_workers": 2, "max_workers": 3},
        operator=ModelSettings(max_workers=3),
        archive=ArchiveSettings(min_workers=2, max_workers=4),
    ),
    "default workers: the server's setting": Row(
        {"min_workers": 5, "max_workers": 5},
        config=Config(default_workers_per_model=5),
        gpus=2,
    ),
    "default workers: one per GPU": Row({"min_workers": 2, "max_workers": 2}, gpus=2),
    "default workers: one without GPUs": Row({"min_workers": 1, "max_workers": 1}),
    # devices
    "every GPU": Row({"devices": (0, 1, 2), "device_type": "gpu"}, gpus=3),
    "archive deviceIds": Row(
        {"devices": (1,), "device_type": "gpu"},
        archive=ArchiveSettings(device_ids=(1,)),
        gpus=2,
    ),
    "archive deviceIds past the GPUs here are ignored": Row(
        {"devices": (0, 1)}, archive=ArchiveSettings(device_ids=(1, 2)), gpus=2
    ),
    "archive deviceType cpu": Row(
        {"devices": (None,), "device_type": "cpu"},
        archive=ArchiveSettings(device_type="cpu", device_ids=(0,)),
        gpus=2,
    ),
    "archive deviceIds without GPUs": Row(
        {"devices": (None,), "device_type": "cpu"}, archive=ArchiveSettings(device_ids=(0,))
    ),
    "operator devices win over the archive": Row(
        {"devices": (3,), "device_type": "gpu"},
        operator=ModelSettings(devices=(3,)),
        archive=ArchiveSettings(device_type="cpu"),
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_effective_settings(row: Row) -> None:
    params = RegisterParams(url="m.mar", **row.request)
    settings = effective_settings(params, row.operator, row.archive, row.config, row.gpus)
    assert {key: getattr(settings, key) for key in row.expected} == row.expected
