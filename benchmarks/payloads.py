"""Request bodies for each scenario, and the answer each one must get.

Bodies are made from a fixed seed and written to files (wrk and the Python client both read
them). The expected answer comes from running the handler's own conversion and the same
TorchScript model in this process, so a wrong, swapped or truncated response is caught.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.answers import matches
from benchmarks.models import SEED, TINY_FEATURES, load_torchscript

JSON = "application/json"
RAW = "application/octet-stream"
JPEG = "image/jpeg"
OIP_HEADER_LENGTH = "Inference-Header-Content-Length"
__all__ = ["Payload", "expected_answer", "make_payloads", "matches"]


@dataclass(frozen=True, slots=True)
class Payload:
    """One request body of a scenario."""

    name: str
    model: str
    content_type: str
    path: Path
    route: str = "/predictions/{model}"  # where it is POSTed
    headers: tuple[tuple[str, str], ...] = ()  # beyond Content-Type
    json_length: int = 0  # an OIP binary body: the JSON header's length, then raw bytes

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()


def make_payloads(folder: Path) -> dict[str, Payload]:
    """Write every payload under `folder`; returns them by name."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED)
    tiny = [round(x, 4) for x in torch.randn(TINY_FEATURES, generator=generator).tolist()]
    bodies: dict[str, tuple[str, str, bytes]] = {
        "tiny-json": ("tiny", JSON, orjson.dumps(tiny)),
        "raw-64": ("resnet18", RAW, _raw(64, generator)),
        "raw-224": ("resnet18", RAW, _raw(224, generator)),
        "jpeg": ("resnet18", JPEG, _jpeg(320, 240, generator)),
    }
    payloads = {}
    for name, (model, content_type, body) in bodies.items():
        path = folder / f"{name}.bin"
        path.write_bytes(body)
        payloads[name] = Payload(name, model, content_type, path)
    # the raw-64 image again, as an Open Inference Protocol binary request to the tensor handler
    raw = (folder / "raw-64.bin").read_bytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 3, 64, 64],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    path = folder / "oip-64.bin"
    path.write_bytes(header + raw)
    payloads["oip-64"] = Payload(
        "oip-64",
        "resnet18-oip",
        RAW,
        path,
        route="/v2/models/{model}/infer",
        headers=((OIP_HEADER_LENGTH, str(len(header))),),
        json_length=len(header),
    )
    return payloads


def _raw(side: int, generator: Any) -> bytes:
    import torch

    return torch.randn(3, side, side, generator=generator).numpy().tobytes()


def _jpeg(width: int, height: int, generator: Any) -> bytes:
    """A photo-like test image: smooth gradients plus a little noise, JPEG quality 90."""
    import torch
    from PIL import Image

    ys = torch.linspace(0, 1, height).view(height, 1, 1)
    xs = torch.linspace(0, 1, width).view(1, width, 1)
    phase = torch.tensor([0.0, 2.1, 4.2]).view(1, 1, 3)
    base = 0.5 + 0.4 * torch.sin(6 * xs + 4 * ys + phase)
    noise = 0.05 * torch.randn(height, width, 3, generator=generator)
    pixels = ((base + noise).clamp(0, 1) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def expected_answer(payload: Payload, model_file: Path) -> Any:
    """What the handler must answer for this payload, computed here."""
    import torch

    from handlers import compat

    compat.install()  # the handler imports ts.*; serve it from handlers.ts
    from benchmarks.bench_handler import answer, to_tensor

    model = load_torchscript(model_file)
    with torch.inference_mode():
        tensor = to_tensor(_decoded(payload), payload.content_type)
        return answer(model(tensor.unsqueeze(0))[0])


def _decoded(payload: Payload) -> Any:
    body = payload.body[payload.json_length :]
    if payload.content_type == JSON:
        return orjson.loads(body)
    return bytearray(body)
