"""The benchmark handler, packaged into every benchmark archive; TorchServe-style on purpose.

It subclasses TorchServe's `BaseHandler`, so the same file runs unchanged in TorchServe 0.12
and in our server. One handler serves every scenario, by each request's content type:

- `application/json`: a list of numbers (the tiny model's 16 features);
- `application/octet-stream`: raw float32 CHW bytes, a zero-copy view (`torch.frombuffer`),
  square images whose side follows from the length (3x64x64, 3x224x224);
- `image/jpeg` (or `image/*`): decoded with Pillow and resized to 224x224, as users send it.

Small outputs answer wide ones with their top class, so response size does not dominate:
the tiny model returns its 4 outputs, ResNet-18 `{"class": i, "score": p}`.
"""

from __future__ import annotations

import io
import json
import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    # mypy knows our `ts` as handlers.ts; at run time `ts` is the serving side's own
    # (handlers/ts in our server, the torchserve package in TorchServe)
    from handlers.ts.torch_handler.base_handler import BaseHandler
else:
    from ts.torch_handler.base_handler import BaseHandler

JPEG_SIDE = 224
WIDE_OUTPUT = 16
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def raw_tensor(value: bytes | bytearray) -> torch.Tensor:
    """A 3xSxS float32 view of raw bytes (no copy; the buffer must be writable)."""
    flat = torch.frombuffer(value, dtype=torch.float32)
    side = math.isqrt(flat.numel() // 3)
    if 3 * side * side != flat.numel():
        raise ValueError(f"{len(value)} bytes are not a 3xSxS float32 image")
    return flat.view(3, side, side)


def jpeg_tensor(value: bytes | bytearray) -> torch.Tensor:
    """Decode an image, resize it to 224x224 and normalize it (ImageNet mean and std)."""
    from PIL import Image

    with Image.open(io.BytesIO(value)) as image:
        rgb = image.convert("RGB").resize((JPEG_SIDE, JPEG_SIDE), Image.Resampling.BILINEAR)
        pixels = bytearray(rgb.tobytes())
    chw = torch.frombuffer(pixels, dtype=torch.uint8).view(JPEG_SIDE, JPEG_SIDE, 3)
    return (chw.permute(2, 0, 1).float().div_(255) - _MEAN) / _STD


def to_tensor(value: Any, content_type: str) -> torch.Tensor:
    """One request's input as a tensor without the batch dimension."""
    if isinstance(value, bytes | bytearray):
        if content_type.startswith("image/") or value[:2] == b"\xff\xd8":
            return jpeg_tensor(value)
        if value[:1] in (b"[", b"{"):  # JSON sent without a content type (gRPC inputs)
            return torch.as_tensor(json.loads(value), dtype=torch.float32)
        return raw_tensor(value)
    return torch.as_tensor(value, dtype=torch.float32)


def answer(row: torch.Tensor) -> Any:
    """The response for one output row."""
    if row.numel() <= WIDE_OUTPUT:
        return row.tolist()
    probabilities = torch.softmax(row, 0)
    score, index = probabilities.max(0)
    return {"class": int(index), "score": float(score)}


class BenchHandler(BaseHandler):
    """Raw bytes, JPEG or JSON in; a list of numbers or the top class out."""

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        rows = []
        for idx, row in enumerate(data):
            name = "data" if row.get("data") is not None else "body"
            header = self.context.get_request_header(idx, name) if self.context else None
            content_type = header.get("content-type", "") if isinstance(header, dict) else ""
            rows.append(to_tensor(row[name], content_type or ""))
        return torch.stack(rows)

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return [answer(row) for row in data]
