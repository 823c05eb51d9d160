"""Image inputs for the vision handlers (TorchServe's `VisionHandler`), with Pillow and torch.

A request's `data` (or `body`) may be image bytes (any format Pillow reads), a base64 string
of them (a `data:image/...;base64,` prefix is accepted), or a nested list already shaped like
a preprocessed image (CxHxW). Images go through: convert (RGB, or L when `grayscale`),
resize, center crop, scale to [0, 1], normalize. The `handler:` section of model-config.yaml
sets each step; `image_defaults` gives a handler's defaults (TorchServe's for each handler).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from handlers.context import Context
from handlers.request_errors import IMAGE_HINT, InputError, PerRequestHandler, require_input
from handlers.util import handler_section

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """Preprocessing steps; None skips a step. `resize` as an int sets the shorter side."""

    resize: int | Size | None = None
    center_crop: Size | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grayscale: bool = False
    interpolation: str = "bilinear"

    @property
    def channels(self) -> int:
        """1 for grayscale, else 3."""
        return 1 if self.grayscale else 3

    def output_size(self) -> Size | None:
        """(H, W) of every preprocessed image, or None when it depends on the input."""
        if self.center_crop is not None:
            return self.center_crop
        if isinstance(self.resize, tuple):
            return self.resize
        return None

    def with_config(self, section: Mapping[str, Any]) -> ImageSettings:
        """These settings overridden by a model-config `handler:` section (checked)."""
        changes: dict[str, Any] = {}
        if "resize" in section:
            changes["resize"] = _size("resize", section["resize"], allow_int=True)
        if "center_crop" in section:
            changes["center_crop"] = _size("center_crop", section["center_crop"])
        for key in ("mean", "std"):
            if key in section:
                changes[key] = _floats(key, section[key])
        if "grayscale" in section:
            if not isinstance(section["grayscale"], bool):
                raise ValueError(
                    f"handler.grayscale must be true or false: {section['grayscale']!r}"
                )
            changes["grayscale"] = section["grayscale"]
        if "interpolation" in section:
            name = section["interpolation"]
            if name not in INTERPOLATIONS:
                raise ValueError(
                    f"handler.interpolation must be one of {', '.join(INTERPOLATIONS)}: {name!r}"
                )
            changes["interpolation"] = name
        settings = replace(self, **changes)
        for key in ("mean", "std"):
            values = getattr(settings, key)
            if values is not None and len(values) != settings.channels:
                raise ValueError(
                    f"handler.{key} needs {settings.channels} value(s) for "
                    f"{'grayscale' if settings.grayscale else 'RGB'} images, got {list(values)}"
                )
        if (settings.mean is None) != (settings.std is None):
            raise ValueError("handler.mean and handler.std must be set together")
        if settings.std is not None and any(s == 0 for s in settings.std):
            raise ValueError("handler.std must not contain 0")
        return settings


def decode_image(value: Any) -> Image.Image | torch.Tensor:
    """A request payload as a Pillow image, or as a tensor when it is a nested list."""
    if value is None:
        raise InputError(f"no 'data' or 'body' input; {IMAGE_HINT}")
    if isinstance(value, str):
        value = _from_base64(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _open_image(bytes(value))
    if isinstance(value, list):
        try:
            return torch.tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the list is not a numeric CxHxW array: {exc}") from None
    raise InputError(
        f"expected image bytes, a base64 string or a nested list, got {type(value).__name__}"
    )


def image_to_tensor(image: Image.Image, settings: ImageSettings) -> torch.Tensor:
    """Convert, resize, center crop, scale to [0, 1] and normalize one image (CxHxW)."""
    image = image.convert("L" if settings.grayscale else "RGB")
    if settings.resize is not None:
        image = _resize(image, settings.resize, INTERPOLATIONS[settings.interpolation])
    if settings.center_crop is not None:
        image = _center_crop(image, settings.center_crop)
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    tensor = pixels.view(height, width, settings.channels).permute(2, 0, 1).float().div(255)
    if settings.mean is not None and settings.std is not None:
        mean = torch.tensor(settings.mean).view(-1, 1, 1)
        std = torch.tensor(settings.std).view(-1, 1, 1)
        tensor = (tensor - mean) / std
    return tensor


class VisionHandler(PerRequestHandler):
    """Decodes each request into an image tensor; undecodable requests get their own 400.

    A subclass may set `image_processing` to any callable taking a Pillow image and returning
    a tensor (e.g. a torchvision `transforms.Compose`), as TorchServe handlers do; otherwise
    the `handler:` settings apply.
    """

    image_defaults = ImageSettings()
    image_processing: Callable[[Image.Image], torch.Tensor] | None = None

    def initialize(self, context: Context) -> None:
        """Load the model, then read the preprocessing settings."""
        super().initialize(context)
        self.image_settings = self.image_defaults.with_config(handler_section(context))
        if context.system_properties.get("limit_max_image_pixels") is False:
            Image.MAX_IMAGE_PIXELS = None

    def preprocess(self, data: list[dict[str, Any]]) -> Any:
        """The accepted requests' images: stacked when they share a size, else a list."""
        images = self.decode_batch(data)
        if not images:
            return None
        if all(image.shape == images[0].shape for image in images):
            return torch.stack(images).to(self.device)
        return [image.to(self.device) for image in images]

    def decode_batch(self, data: list[dict[str, Any]]) -> list[torch.Tensor]:
        """One preprocessed tensor per accepted request, in order; others are rejected."""
        images: list[torch.Tensor] = []
        for idx, row in enumerate(data):
            try:
                value = require_input(row, IMAGE_HINT, self.context, idx)
                images.append(self.load_image(value))
            except InputError as exc:
                self.reject(idx, str(exc))
        return images

    def load_image(self, value: Any) -> torch.Tensor:
        """One request payload as a preprocessed CxHxW tensor."""
        decoded = decode_image(value)
        if isinstance(decoded, torch.Tensor):
            return self._check_shape(decoded)
        if self.image_processing is not None:
            return self.image_processing(decoded)
        return image_to_tensor(decoded, self.image_settings)

    def _check_shape(self, tensor: torch.Tensor) -> torch.Tensor:
        settings = self.image_settings
        size = settings.output_size()
        ok = tensor.dim() == 3 and tensor.shape[0] == settings.channels
        if ok and size is not None and tuple(tensor.shape[1:]) != size:
            ok = False
        if not ok:
            want = (
                f"{settings.channels}x{size[0]}x{size[1]}" if size else f"{settings.channels}xHxW"
            )
            got = "x".join(str(n) for n in tensor.shape) or "a scalar"
            raise InputError(f"the list has shape {got}; this model takes {want}")
        return tensor


def _from_base64(text: str) -> bytes:
    payload = text.strip()
    if payload.startswith("data:") and "," in payload:
        payload = payload.split(",", 1)[1]
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"the string is not valid base64: {exc}") from None


def _open_image(data: bytes) -> Image.Image:
    if not data:
        raise InputError("the input is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"the image is too large: {exc}") from None
    except UnidentifiedImageError:
        raise InputError("not a decodable image (no image format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not a decodable image ({type(exc).__name__}: {exc})") from None
    return image


def _resize(image: Image.Image, size: int | Size, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    if isinstance(size, tuple):
        new_height, new_width = size
    else:  # torchvision's Resize(int): the shorter side becomes `size`, aspect kept
        if min(width, height) == size:
            return image
        if width <= height:
            new_width, new_height = size, int(size * height / width)
        else:
            new_width, new_height = int(size * width / height), size
    return image.resize((new_width, new_height), resample)


def _center_crop(image: Image.Image, size: Size) -> Image.Image:
    """torchvision's CenterCrop; a crop larger than the image pads it with zeros."""
    height, width = size
    top = round((image.height - height) / 2.0)
    left = round((image.width - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def _size(key: str, value: Any, *, allow_int: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value if allow_int else (value, value)
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (value[0], value[1])
    raise ValueError(f"handler.{key} must be a positive integer or [height, width]: {value!r}")


def _floats(key: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ValueError(f"handler.{key} must be a list of numbers: {value!r}")
