"""Configuration: the frozen Config (from serve.yaml or TorchServe's config.properties).

`schema` holds the dataclasses, `validate` turns raw keys into a Config (every error names
the key), `load` reads the YAML file; `torchserve` reads a config.properties into the same
raw keys; `properties` is the Java .properties codec.
The names every layer imports are re-exported here.
"""

from serve.config.load import load_config
from serve.config.schema import (
    DEFAULT_ALLOWED_URLS,
    DEFAULT_MAX_DOWNLOAD_SIZE,
    MAX_INT,
    MAX_WORKERS,
    SHAREABLE,
    TRAFFIC_KEY,
    Address,
    Config,
    ConfigError,
    ModelSettings,
    SnapshotVersion,
    shares_api_port,
)
from serve.config.validate import build_config, parse_address

__all__ = [
    "DEFAULT_ALLOWED_URLS",
    "DEFAULT_MAX_DOWNLOAD_SIZE",
    "MAX_INT",
    "MAX_WORKERS",
    "SHAREABLE",
    "TRAFFIC_KEY",
    "Address",
    "Config",
    "ConfigError",
    "ModelSettings",
    "SnapshotVersion",
    "build_config",
    "load_config",
    "parse_address",
    "shares_api_port",
]
