"""`object_detector`: TorchServe's ObjectDetector, batched.

Output per request: `[{label: [x1, y1, x2, y2], "score": s}, ...]` for the detections whose
score is at least `threshold` (0.5; model-config `handler: {threshold: ...}`). The model gets
the images as TorchServe passes them (scaled to [0, 1], no resize, as one NxCxHxW tensor) and
returns one `{"boxes", "labels", "scores"}` dict per image, as torchvision detection models do.
When the images of a batch differ in size it gets a list of CxHxW tensors instead (which
torchvision detection models accept), still in one forward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from handlers.context import Context
from handlers.util import handler_section
from handlers.vision import VisionHandler


class ObjectDetector(VisionHandler):
    """Boxes, labels and scores per image, filtered by score."""

    threshold = 0.5

    def initialize(self, context: Context) -> None:
        """Load the model and read `threshold`."""
        super().initialize(context)
        threshold = handler_section(context).get("threshold", self.threshold)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"handler.threshold must be a number: {threshold!r}")
        self.threshold = float(threshold)

    def inference(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        """One forward pass over the batch (a tensor, or a list when sizes differ)."""
        with torch.inference_mode():
            return self.model(data, *args, **kwargs)

    def postprocess(self, data: list[dict[str, torch.Tensor]]) -> list[list[dict[str, Any]]]:
        """The detections at or above the threshold, per request."""
        results = []
        for row in data:
            keep = row["scores"] >= self.threshold
            boxes = row["boxes"][keep].tolist()
            labels = row["labels"][keep].tolist()
            scores = row["scores"][keep].tolist()
            results.append(
                [
                    {self._label(label): box, "score": score}
                    for label, box, score in zip(labels, boxes, scores, strict=True)
                ]
            )
        return results

    def _label(self, index: Any) -> str:
        key = str(index)
        return self.mapping.get(key, key) if self.mapping is not None else key
