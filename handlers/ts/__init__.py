"""TorchServe's import names, served when TorchServe itself is not installed (see compat)."""

__version__ = "0.12.0"
