"""What a run measures: the scenarios of each suite, as plain data.

A scenario is one model, payload and batching setting, loaded at several concurrencies (closed
loop) and optionally rates (open loop), on some servers. TorchServe may run with several worker
counts; the best of them is the figure that the targets compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Scenario:
    """One model + payload + batching setting, and the loads to drive it with."""

    key: str
    title: str
    model: str
    payload: str
    batch_size: int
    max_batch_delay: int
    concurrencies: tuple[int, ...]
    rates: tuple[float, ...] = ()
    servers: tuple[str, ...] = ("ours", "torchserve")
    torchserve_workers: tuple[int, ...] = (1,)
    # the raw forward loop to compare with: (input shape, batch size)
    forward: tuple[tuple[int, ...], int] | None = None
    # report throughput as a fraction of the HTTP floor and of the GIL limit (tiny model)
    gil_limit: bool = False


@dataclass(frozen=True, slots=True)
class Suite:
    """Scenarios plus the one-off measurements."""

    name: str
    scenarios: tuple[Scenario, ...]
    cold_start_models: tuple[str, ...] = ("tiny", "resnet18")
    memory_model: str = "resnet18"
    forward_loops: tuple[tuple[str, tuple[int, ...], int], ...] = field(default=())


TINY_B1 = Scenario(
    key="tiny-b1",
    title="tiny MLP, JSON, batch 1",
    model="tiny",
    payload="tiny-json",
    batch_size=1,
    max_batch_delay=5,
    concurrencies=(1, 8, 32),
    servers=("floor", "ours", "torchserve"),
    torchserve_workers=(1, 2),
    gil_limit=True,
)
TINY_B8 = Scenario(
    key="tiny-b8",
    title="tiny MLP, JSON, batch 8 / 5 ms",
    model="tiny",
    payload="tiny-json",
    batch_size=8,
    max_batch_delay=5,
    concurrencies=(1, 8, 32),
    rates=(500.0,),
    torchserve_workers=(1, 2),
    gil_limit=True,
)
R64 = Scenario(
    key="r18-64-raw-b8",
    title="ResNet-18 3x64x64, raw float32, batch 8 / 5 ms",
    model="resnet18",
    payload="raw-64",
    batch_size=8,
    max_batch_delay=5,
    concurrencies=(1, 8, 32),
    rates=(200.0,),
    forward=((3, 64, 64), 8),
)
# the same model and image as R64, through the Open Inference Protocol's binary extension to
# a tensor handler (benchmarks/bench_tensor_handler.py); TorchServe has no binary OIP
R64_OIP = Scenario(
    key="r18-64-oip-b8",
    title="ResNet-18 3x64x64, OIP v2 binary tensor, tensor handler, batch 8 / 5 ms",
    model="resnet18-oip",
    payload="oip-64",
    batch_size=8,
    max_batch_delay=5,
    concurrencies=(1, 8, 32),
    servers=("ours",),
    forward=((3, 64, 64), 8),
)
R224 = Scenario(
    key="r18-224-raw-b8",
    title="ResNet-18 3x224x224, raw float32, batch 8 / 5 ms",
    model="resnet18",
    payload="raw-224",
    batch_size=8,
    max_batch_delay=5,
    concurrencies=(8,),
    forward=((3, 224, 224), 8),
)
JPEG = Scenario(
    key="r18-jpeg-b8",
    title="ResNet-18, JPEG 320x240 decoded and resized to 224, batch 8 / 5 ms",
    model="resnet18",
    payload="jpeg",
    batch_size=8,
    max_batch_delay=5,
    concurrencies=(8,),
    forward=((3, 224, 224), 8),
)

FORWARD_LOOPS = (
    ("resnet18", (3, 64, 64), 1),
    ("resnet18", (3, 64, 64), 8),
    ("resnet18", (3, 224, 224), 8),
    ("tiny", (16,), 1),
    ("tiny", (16,), 8),
)

SUITES = {
    "default": Suite(
        "default", (TINY_B1, TINY_B8, R64, R64_OIP, R224, JPEG), forward_loops=FORWARD_LOOPS
    ),
    "quick": Suite(
        "quick",
        (
            Scenario(
                key="tiny-b8",
                title="tiny MLP, JSON, batch 8 / 5 ms",
                model="tiny",
                payload="tiny-json",
                batch_size=8,
                max_batch_delay=5,
                concurrencies=(1, 32),
                servers=("floor", "ours", "torchserve"),
                gil_limit=True,
            ),
            Scenario(
                key="r18-64-raw-b8",
                title="ResNet-18 3x64x64, raw float32, batch 8 / 5 ms",
                model="resnet18",
                payload="raw-64",
                batch_size=8,
                max_batch_delay=5,
                concurrencies=(8, 32),
                forward=((3, 64, 64), 8),
            ),
        ),
        cold_start_models=("tiny",),
        forward_loops=(("resnet18", (3, 64, 64), 8),),
    ),
}
