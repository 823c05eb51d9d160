"""A TorchServe-compatible PyTorch model server in one asyncio process."""

__version__ = "0.1.0"
