"""The benchmark's tensor handler: the same TorchScript model behind the Open Inference Protocol.

Requests arrive as named tensors (a binary OIP body becomes a tensor without a copy), the
server stacks concurrent requests along dimension 0, and the answer per row is the top class
and its probability, as `bench_handler.answer` gives for a wide output.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from handlers.tensor import TensorHandler, TensorSpec


class BenchTensorHandler(TensorHandler):
    """`input` (N x 3 x S x S, float32) in; `class` (int64) and `score` (float32) per row out."""

    inputs = [TensorSpec("input", "FP32", (-1, 3, -1, -1))]
    outputs = [TensorSpec("class", "INT64", (-1,)), TensorSpec("score", "FP32", (-1,))]

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(os.path.join(model_dir, serialized), map_location=self.device)
        self.model.eval()

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with torch.inference_mode():
            logits = self.model(inputs["input"].to(self.device))
            score, index = torch.softmax(logits, 1).max(1)
        return {"class": index.cpu(), "score": score.cpu()}
