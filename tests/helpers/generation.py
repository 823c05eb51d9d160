"""The tiny byte-level decoder (handlers.generation.tiny) archived with `handler:
text_generation` by our archiver: the generative model the OpenAI tests serve."""

from __future__ import annotations

from pathlib import Path

from handlers.generation import tiny


def tiny_archive(root: Path, store: Path, name: str, model_config: str, *, steps: int) -> Path:
    """Train the tiny model for `steps` under `root` and archive it as `store/<name>.mar`."""
    from serve.archiver.cli import main as archive

    weights = tiny.build(root / f"{name}-weights", steps=steps)
    config = root / f"{name}-model-config.yaml"
    config.write_text(model_config)
    archive(
        [
            "--model-name", name, "--version", "1.0", "--handler", "text_generation",
            "--extra-files", f"{weights / 'config.json'},{weights / 'model.pt'}",
            "-c", str(config), "--export-path", str(store),
        ]
    )  # fmt: skip
    return store / f"{name}.mar"
