"""Model files and `.mar` archives, built with the real `torch-model-archiver`.

Both servers load the very same archive file from one model store.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.models import save_torchscript

HANDLER = Path(__file__).with_name("bench_handler.py")
TENSOR_HANDLER = Path(__file__).with_name("bench_tensor_handler.py")
VERSION = "1.0"
# archives of a model's same weights behind the tensor handler (Open Inference Protocol)
TENSOR_MODELS = {"resnet18-oip": "resnet18"}


def archiver() -> str:
    """The torch-model-archiver next to this Python, else the one on PATH."""
    local = Path(sys.executable).with_name("torch-model-archiver")
    if local.exists():
        return str(local)
    found = shutil.which("torch-model-archiver")
    if found is None:
        raise RuntimeError(
            "torch-model-archiver is not installed (pip install torch-model-archiver)"
        )
    return found


def build_archive(model: str, store: Path, work: Path) -> Path:
    """Trace `model`, archive it with the benchmark handler into `store`; returns the .mar.

    A TENSOR_MODELS name gets the same traced weights and the tensor handler.
    """
    work.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    weights = save_torchscript(TENSOR_MODELS.get(model, model), work / f"{model}.pt")
    handler = TENSOR_HANDLER if model in TENSOR_MODELS else HANDLER
    subprocess.run(
        [
            archiver(),
            "--model-name", model,
            "--version", VERSION,
            "--serialized-file", str(weights),
            "--handler", str(handler),
            "--export-path", str(store),
            "--force",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return store / f"{model}.mar"
