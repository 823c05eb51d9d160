"""`image_classifier`: TorchServe's ImageClassifier, batched, with configurable preprocessing.

Output per request: `{label: probability}` for the `topk` most likely classes (softmax), labels
from `index_to_name.json` else the class index. model-config.yaml `handler:` keys and their
(TorchServe) defaults: `resize: 256`, `center_crop: 224`, ImageNet `mean`/`std`,
`grayscale: false`, `interpolation: bilinear`, `topk: 5`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from handlers.context import Context
from handlers.util import handler_section, map_class_to_label
from handlers.vision import IMAGENET_MEAN, IMAGENET_STD, ImageSettings, VisionHandler


class ImageClassifier(VisionHandler):
    """Top-k softmax classification of images."""

    topk = 5
    image_defaults = ImageSettings(
        resize=256, center_crop=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD
    )

    def initialize(self, context: Context) -> None:
        """Load the model and read `topk` and the preprocessing settings."""
        super().initialize(context)
        topk = handler_section(context).get("topk", self.topk)
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"handler.topk must be a positive integer: {topk!r}")
        self.topk = topk
        if self.image_processing is None and self.image_settings.output_size() is None:
            raise ValueError(
                "image_classifier needs one image size per batch: set handler.center_crop "
                "or handler.resize as [height, width]"
            )

    def set_max_result_classes(self, topk: int) -> None:
        """TorchServe's setter for the number of classes returned."""
        self.topk = topk

    def get_max_result_classes(self) -> int:
        """The number of classes returned per request."""
        return self.topk

    def postprocess(self, data: torch.Tensor) -> list[dict[str, Any]]:
        """`{label: probability}` for the top k classes of each request."""
        probabilities = F.softmax(data, dim=1)
        k = min(self.topk, probabilities.shape[1])
        probs, classes = torch.topk(probabilities, k, dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
