"""Configuration: the frozen Config (from serve.yaml or TorchServe's config.properties).

`schema` holds the Config, its validation and the YAML reader; `torchserve` reads a
config.properties into the same raw keys; `properties` is the Java .properties codec.
The names every layer imports are re-exported here.
"""

from serve.config.schema import (
    DEFAULT_ALLOWED_URLS,
    DEFAULT_MAX_DOWNLOAD_SIZE,
    MAX_WORKERS,
    SHAREABLE,
    TRAFFIC_KEY,
    Address,
    Config,
    ConfigError,
    ModelSettings,
    SnapshotVersion,
    build_config,
    load_config,
    parse_address,
    shares_api_port,
)

__all__ = [
    "DEFAULT_ALLOWED_URLS",
    "DEFAULT_MAX_DOWNLOAD_SIZE",
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
