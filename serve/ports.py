"""The configuration error for an address that cannot be bound, naming its config key."""

from __future__ import annotations

import errno

from serve.config import Address, ConfigError


def bind_error(key: str, address: Address, exc: OSError) -> ConfigError:
    """`key: ADDRESS is already in use (...)`, or the OS's reason for another failure."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            key,
            f"{address} is already in use (another server, TorchServe perhaps, is listening there)",
        )
    return ConfigError(key, f"cannot bind {address}: {exc.strerror or exc}")
