"""Server configuration: the frozen dataclasses every layer reads.

Keys follow TorchServe's `config.properties` names. `serve.config.validate` builds a Config
from raw keys, naming the key in every error; `serve.config.load` reads the YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve.routing.split import Split

if TYPE_CHECKING:
    from serve.config.metrics import MetricsSpec

# Each worker is a thread holding its own model copy: a typo such as min_worker=10000 would
# start that many threads and take the machine down, so the config and the APIs refuse more.
MAX_WORKERS = 256
# TorchServe reads its numeric parameters and keys as Java ints: a larger count, delay or
# timeout is refused (it would also not fit the describe JSON's 64-bit integers or a snapshot)
MAX_INT = 2**31 - 1
DEFAULT_ALLOWED_URLS = ("file://.*", "http(s)?://.*")
TRAFFIC_KEY = "traffic"  # reserved beside the versions of a `models:` entry
DEFAULT_MAX_DOWNLOAD_SIZE = 10 * 1024**3


class ConfigError(Exception):
    """A configuration problem; `key` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class Address:
    """A host and port to bind; port 0 asks the OS for a free one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Operator overrides for one model version; None means "not set here"."""

    batch_size: int | None = None
    max_batch_delay: int | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    response_timeout: float | None = None
    devices: tuple[int, ...] | None = None
    default_version: bool | None = None


@dataclass(frozen=True, slots=True)
class SnapshotVersion:
    """A model version to restore at start (a snapshot's `model_snapshot` entry).

    `extra` keeps the fields this server does not read (TorchServe's `runtimeType`, or those
    a feature adds to snapshots), so a feature can read back what it saved.
    """

    mar_name: str
    settings: ModelSettings
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole server configuration."""

    inference_address: Address = Address("127.0.0.1", 8080)
    management_address: Address = Address("127.0.0.1", 8081)
    metrics_address: Address = Address("127.0.0.1", 8082)
    grpc_inference_address: Address = Address("127.0.0.1", 7070)
    grpc_management_address: Address = Address("127.0.0.1", 7071)
    model_store: Path | None = None
    load_models: tuple[str, ...] = ()
    default_workers_per_model: int = 0
    job_queue_size: int = 100
    max_request_size: int = 6553500
    default_response_timeout: float = 120.0
    default_startup_timeout: float = 120.0  # a model's startupTimeout when none is given
    enable_model_api: bool = False
    disable_token_authorization: bool = False
    token_expiration_min: float = 60.0
    access_log: bool = True
    access_log_format: str = "text"
    no_config_snapshots: bool = False
    allowed_urls: tuple[str, ...] = DEFAULT_ALLOWED_URLS
    max_download_size: int = DEFAULT_MAX_DOWNLOAD_SIZE
    download_timeout: float = 60.0
    max_request_time: float | None = None
    install_py_dep_per_model: bool = False
    number_of_gpu: int | None = None
    torch_num_threads: int = 0
    adaptive_batching: bool = True
    log_level: str = "INFO"
    routing_header: str = "X-Routing-Key"
    metrics_config: Path | None = None  # TorchServe's metrics.yaml; read into `metrics`
    metrics_mode: str = "prometheus"
    model_metrics_auto_detect: bool = False
    # TorchServe's periodic host metrics in ts_metrics.log (metrics_mode log or legacy)
    disable_system_metrics: bool = False
    metric_time_interval: float = 60.0  # seconds between two of them
    models: Mapping[str, Mapping[str, ModelSettings]] = field(default_factory=dict)
    model_snapshot: Mapping[str, Mapping[str, SnapshotVersion]] = field(default_factory=dict)
    snapshot_dir: Path | None = None
    # from `models: {name: {traffic: {...}}}`, applied once the startup models are registered
    traffic: Mapping[str, Split] = field(default_factory=dict)
    # the parsed `metrics_config` file (None: every metric is exported, handler ones on first use)
    metrics: MetricsSpec | None = None

    def model_settings(self, name: str, version: str) -> ModelSettings:
        """The operator's settings for a model version (`*` matches any version)."""
        versions = self.models.get(name, {})
        return versions.get(version) or versions.get("*") or ModelSettings()


# Inference and management may share one address (KServe's TorchServe config does): then one
# listener answers both APIs. Every other pair of listeners needs its own port.
SHAREABLE = frozenset({"inference_address", "management_address"})


def shares_api_port(config: Config) -> bool:
    """Whether the inference and management APIs are served by one listener."""
    same = config.inference_address == config.management_address
    return same and config.inference_address.port != 0
