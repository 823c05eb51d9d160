"""`image_segmenter`: TorchServe's ImageSegmenter, batched.

Output per request: an HxW list of `[class_index, probability]` per pixel (softmax over the
model's class scores, from `output["out"]` for torchvision models or the output tensor).
Defaults as TorchServe's: no resize or crop, ImageNet `mean`/`std`; the model-config
`handler:` section can set `resize`, `center_crop`, `mean`, `std`, `grayscale`.
Images of one size run in one forward pass; a batch mixing sizes runs once per size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from handlers.vision import IMAGENET_MEAN, IMAGENET_STD, ImageSettings, VisionHandler


class ImageSegmenter(VisionHandler):
    """Per-pixel classification."""

    image_defaults = ImageSettings(mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """Class scores (CxHxW) per accepted request."""
        if isinstance(data, torch.Tensor):
            return list(self._scores(data, *args, **kwargs))
        by_size: dict[tuple[int, ...], list[int]] = {}
        for idx, image in enumerate(data):
            by_size.setdefault(tuple(image.shape), []).append(idx)
        scores: list[torch.Tensor | None] = [None] * len(data)
        for indices in by_size.values():
            batch = torch.stack([data[i] for i in indices])
            for idx, result in zip(indices, self._scores(batch, *args, **kwargs), strict=True):
                scores[idx] = result
        return [s for s in scores if s is not None]

    def _scores(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output = super().inference(batch, *args, **kwargs)
        scores: torch.Tensor = output["out"] if isinstance(output, dict) else output
        return scores

    def postprocess(self, data: list[torch.Tensor]) -> list[Any]:
        """[[class, probability], ...] per pixel for each request."""
        results = []
        for scores in data:
            best = F.softmax(scores.float(), dim=0).max(dim=0)
            pixels = torch.stack([best.indices.to(best.values.dtype), best.values], dim=2)
            results.append(pixels.tolist())
        return results
