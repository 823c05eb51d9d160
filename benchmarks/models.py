"""The benchmark models, defined here with random weights from a fixed seed.

- `tiny`: a small MLP (16 → 64 → 64 → 4); its compute is negligible, so a benchmark of it
  measures the serving framework.
- `resnet18`: ResNet-18 written in plain torch (torchvision is not importable beside this torch
  build); it runs on any input size, and the scenarios send 3x64x64 and 3x224x224.

Both are saved with `torch.jit.trace`, so both servers load them the same way
(`BaseHandler.initialize` → `torch.jit.load`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

SEED = 1234
TINY_FEATURES = 16
TINY_CLASSES = 4
FC_GAIN = 30.0


class TinyMLP(nn.Module):
    """16 inputs, two hidden layers of 64, 4 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(TINY_FEATURES, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, TINY_CLASSES),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)  # nn.Module.__call__ is typed Any
        return out


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        summed: Tensor = self.relu(out + self.downsample(x))
        return summed


class ResNet18(nn.Module):
    """torchvision's resnet18 layout: 4 stages of 2 BasicBlocks, 1000 classes."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers: list[nn.Module] = []
        inplanes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            )
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        out: Tensor = self.fc(torch.flatten(x, 1))
        return out


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A benchmark model: how to build it and an example input for tracing."""

    name: str
    example_shape: tuple[int, ...]

    def build(self) -> nn.Module:
        """The model with seeded random weights, in eval mode."""
        torch.manual_seed(SEED)
        model: nn.Module = TinyMLP() if self.name == "tiny" else ResNet18()
        if isinstance(model, ResNet18):
            with torch.no_grad():
                # non-trivial batch-norm statistics, so the outputs are not all alike
                for module in model.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        # typed Optional; set, as track_running_stats defaults to True
                        assert module.running_mean is not None
                        assert module.running_var is not None
                        module.running_mean.uniform_(-0.1, 0.1)
                        module.running_var.uniform_(0.5, 1.5)
                # a confident top class, so batching's rounding cannot change the answer
                model.fc.weight.mul_(FC_GAIN)
        return model.eval()


MODELS = {
    "tiny": ModelSpec("tiny", (1, TINY_FEATURES)),
    "resnet18": ModelSpec("resnet18", (1, 3, 64, 64)),
}


def save_torchscript(name: str, path: Path) -> Path:
    """Trace model `name` and save it as TorchScript at `path`."""
    spec = MODELS[name]
    model = spec.build()
    torch.manual_seed(SEED)
    example = torch.randn(spec.example_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.x
        # torch leaves jit.trace unannotated
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
        traced.save(str(path))
    return path


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a saved model the way BaseHandler does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # torch leaves jit.load unannotated; it returns a (Recursive)ScriptModule
        module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return module.eval()


def parameter_bytes(name: str) -> int:
    """Bytes of the model's parameters and buffers (what one more copy of it costs)."""
    model = MODELS[name].build()
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
