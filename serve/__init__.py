"""A TorchServe-compatible PyTorch model server in one asyncio process."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("serve")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
