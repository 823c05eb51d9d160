"""Train the digits CNN on scikit-learn's bundled 8x8 digits (no download) in a few seconds.

    python examples/digits/train.py --out-dir build/digits [--sample examples/digits/sample_7.png]

writes `digits.pt` (the state_dict for model.py) and prints the accuracy on the 300 held-out
images, which training never sees. Pixels are handled exactly as the server will see them:
8-bit grayscale scaled to [0, 1], normalized with model-config.yaml's `handler.mean`/`std`.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
HELD_OUT = 300
EPOCHS = 15
BATCH = 64


@dataclass(frozen=True)
class Split:
    """8-bit 8x8 images (Nx8x8 uint8) and labels, for training and held out."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    held_out_images: torch.Tensor
    held_out_labels: torch.Tensor


def load_split() -> Split:
    """scikit-learn's digits as 8-bit pixels, split by a fixed permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.tensor(digits.images * 255.0 / 16.0).round().to(torch.uint8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
    train, held = order[:-HELD_OUT], order[-HELD_OUT:]
    return Split(pixels[train], labels[train], pixels[held], labels[held])


def preprocessing() -> tuple[float, float]:
    """(mean, std) from model-config.yaml, so training and serving normalize alike."""
    config = yaml.safe_load((HERE / "model-config.yaml").read_text(encoding="utf-8"))
    return float(config["handler"]["mean"][0]), float(config["handler"]["std"][0])


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """Nx8x8 uint8 → Nx1x8x8 normalized floats."""
    mean, std = preprocessing()
    return ((pixels.float() / 255.0 - mean) / std).unsqueeze(1)


def model_class() -> type[nn.Module]:
    """DigitsCNN from model.py beside this file."""
    spec = importlib.util.spec_from_file_location("digits_model", HERE / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[nn.Module] = module.DigitsCNN
    return cls


def train(split: Split, epochs: int = EPOCHS) -> nn.Module:
    """Adam with a fixed seed; the held-out images are never used."""
    torch.set_num_threads(1)  # batches this small train several times faster on one thread
    torch.manual_seed(SEED)
    model = model_class()()
    inputs, labels = to_input(split.train_images), split.train_labels
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-2, total_steps=epochs * ((len(labels) + BATCH - 1) // BATCH)
    )
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of images the model labels correctly."""
    with torch.inference_mode():
        predicted = model(to_input(pixels)).argmax(dim=1)
    return float((predicted == labels).float().mean())


def png(pixels: torch.Tensor, size: int = 64) -> bytes:
    """An 8x8 uint8 image as a sizexsize PNG (each pixel a block, so it stays exact)."""
    image = Image.frombytes("L", (8, 8), bytes(pixels.contiguous().view(-1).tolist()))
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Train, save the state_dict, optionally write a sample held-out 7 as a PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="where digits.pt goes")
    parser.add_argument("--sample", type=Path, help="write a held-out 7 as a 64x64 PNG here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    split = load_split()
    model = train(split)
    seconds = time.perf_counter() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out_dir / "digits.pt")
    held_out = accuracy(model, split.held_out_images, split.held_out_labels)
    print(
        f"trained in {seconds:.1f} s on {len(split.train_labels)} images; "
        f"held-out accuracy {held_out:.1%} on {len(split.held_out_labels)} images",
        file=sys.stderr,
    )
    if args.sample is not None:
        first_seven: Any = (split.held_out_labels == 7).nonzero()[0, 0]
        args.sample.write_bytes(png(split.held_out_images[first_seven]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
