"""The built-in handlers, served over HTTP in batches, with real images and text.

Every model runs with batch_size 4. To make "these four requests form one batch" certain
rather than likely, each test model waits in `forward` while a hold file exists: the test
creates it, sends one request that occupies the executor, sends the four, waits until the
management API shows them queued, then removes the file. The counters must then show exactly
two executions (the holder, then the four together). A bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from PIL import Image

from serve.archiver import ArchiveSpec, build_archive
from tests.helpers.clients import Reply, concurrently, metric, request, send
from tests.helpers.server import Server, serving

TEXT = {"Content-Type": "text/plain"}
BATCH = {"batch_size": 4, "max_batch_delay": 300}
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255,) * 3, (0, 0, 0)


def image(color: tuple[int, int, int], size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def form_field(name: str, content: bytes, filename: str) -> aiohttp.FormData:
    """A multipart/form-data body with one file field."""
    body = aiohttp.FormData()
    body.add_field(name, content, filename=filename, content_type="application/octet-stream")
    return body


def half_white(width: int, height: int) -> bytes:
    """Left half white, right half black."""
    picture = Image.new("RGB", (width, height), BLACK)
    picture.paste(Image.new("RGB", (width // 2, height), WHITE), (0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


MODELS: dict[str, dict[str, Any]] = {
    "colors": {
        "handler": "image_classifier",
        "code": """
            class ColorNet(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = torch.nn.Linear(3, 3)

                def forward(self, x):
                    hold()
                    return self.linear(x.mean(dim=(2, 3)))
        """,
        "state": {"linear.weight": torch.eye(3) * 5, "linear.bias": torch.zeros(3)},
        "labels": {"0": "red", "1": "green", "2": ["n000", "blue"]},
    },
    "colors_small": {
        "handler": "image_classifier",
        "code": """
            class SmallColorNet(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = torch.nn.Linear(3, 3)

                def forward(self, x):
                    hold()
                    assert x.shape[1:] == (3, 16, 12), x.shape
                    return self.linear(x.mean(dim=(2, 3)))
        """,
        "state": {"linear.weight": torch.eye(3) * 5, "linear.bias": torch.zeros(3)},
        "labels": {"0": "red", "1": "green", "2": "blue"},
        "config": {
            "handler": {
                "resize": 20,
                "center_crop": [16, 12],
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "topk": 2,
            }
        },
    },
    "custom": {  # a TorchServe-style handler file subclassing ts.torch_handler's classifier
        "handler": "custom_handler.py",
        "handler_code": """
            from ts.torch_handler.image_classifier import ImageClassifier
            from ts.torch_handler.vision_handler import VisionHandler


            class TopLabel(ImageClassifier):
                def postprocess(self, data):
                    assert isinstance(self, VisionHandler)
                    return [next(iter(scores)) for scores in super().postprocess(data)]
        """,
        "code": """
            class ColorNet(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = torch.nn.Linear(3, 3)

                def forward(self, x):
                    hold()
                    return self.linear(x.mean(dim=(2, 3)))
        """,
        "state": {"linear.weight": torch.eye(3) * 5, "linear.bias": torch.zeros(3)},
        "labels": {"0": "red", "1": "green", "2": "blue"},
    },
    "segmenter": {
        "handler": "image_segmenter",
        "code": """
            class Brightness(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = torch.nn.Conv2d(3, 2, kernel_size=1)

                def forward(self, x):
                    hold()
                    return {"out": self.conv(x)}
        """,
        "state": {
            "conv.weight": torch.tensor([[-1.0] * 3, [1.0] * 3]).view(2, 3, 1, 1),
            "conv.bias": torch.zeros(2),
        },
        "labels": None,
    },
    "detector": {
        "handler": "object_detector",
        "code": """
            class WholeImage(torch.nn.Module):
                def forward(self, images):
                    hold()
                    found = []
                    for image in images:
                        _, height, width = image.shape
                        boxes = [[0.0, 0.0, width, height], [1.0, 1.0, 2.0, 2.0]]
                        found.append({
                            "boxes": torch.tensor(boxes),
                            "labels": torch.tensor([1, 2]),
                            "scores": torch.stack([image.mean(), torch.tensor(0.1)]),
                        })
                    return found
        """,
        "state": {},
        "labels": {"1": "person", "2": "cat"},
    },
    "text": {
        "handler": "text_classifier",
        "code": """
            class Sentiment(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.bag = torch.nn.EmbeddingBag(6, 2, mode="mean")

                def forward(self, text, offsets):
                    hold()
                    return self.bag(text, offsets)
        """,
        "state": {
            "bag.weight": torch.tensor(
                [[0.0, 0.0], [0.0, 8.0], [0.0, 8.0], [8.0, 0.0], [8.0, 0.0], [0.0, 16.0]]
            )
        },
        "labels": {"0": "negative", "1": "positive"},
        "vocab": {"<unk>": 0, "good": 1, "great": 2, "bad": 3, "awful": 4, "not bad": 5},
    },
}


HOLD_PREFIX = """import os
import time

import torch

HOLD = {hold!r}


def hold():
    while os.path.exists(HOLD):  # the test holds the executor so that a burst queues up
        time.sleep(0.005)
"""


def build(name: str, spec: dict[str, Any], src: Path, store: Path, hold: Path) -> None:
    folder = src / name
    folder.mkdir(parents=True)
    code = HOLD_PREFIX.format(hold=str(hold)) + textwrap.dedent(spec["code"])
    (folder / "model.py").write_text(code)
    torch.save(spec["state"], folder / "weights.pt")
    extra = []
    if spec["labels"] is not None:
        (folder / "index_to_name.json").write_text(json.dumps(spec["labels"]))
        extra.append(str(folder / "index_to_name.json"))
    if "vocab" in spec:
        (folder / "vocab.json").write_text(json.dumps(spec["vocab"]))
        extra.append(str(folder / "vocab.json"))
    handler = spec["handler"]
    if "handler_code" in spec:
        (folder / handler).write_text(textwrap.dedent(spec["handler_code"]))
        handler = str(folder / handler)
    config = None
    if "config" in spec:
        config = folder / "model-config.yaml"
        config.write_text(json.dumps(spec["config"]))  # JSON is YAML
    build_archive(
        ArchiveSpec(
            model_name=name,
            version="1.0",
            handler=handler,
            model_file=str(folder / "model.py"),
            serialized_file=str(folder / "weights.pt"),
            extra_files=",".join(extra) or None,
            config_file=str(config) if config else None,
            export_path=str(store),
        )
    )


@dataclass
class Served:
    server: Server
    hold: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("handlers")
    store = root / "store"
    store.mkdir()
    hold = root / "hold"
    for name, spec in MODELS.items():
        build(name, spec, root / "src", store, hold)
    with serving(
        root,
        store=store,
        load=[f"{name}.mar" for name in MODELS],
        models={name: {"1.0": BATCH} for name in MODELS},
    ) as server:
        yield Served(server, hold)


@pytest.fixture
def server(served: Served) -> Server:
    return served.server


def predict(served: Served, model: str, payloads: list[dict[str, Any]]) -> list[Reply]:
    """Send the payloads as one batch (see the module docstring); replies in order."""
    server = served.server
    url = f"{server.inference}/predictions/{model}"
    executions = metric(server, "serve_executions_total", model_name=model)
    inferences = metric(server, "serve_inferences_total", model_name=model)

    async def run() -> list[Reply]:
        async with aiohttp.ClientSession() as session:
            served.hold.touch()
            try:
                holder = asyncio.create_task(send(session, "POST", url, **payloads[0]))
                await until(lambda: executions_now(model) == executions + 1)
                burst = [asyncio.create_task(send(session, "POST", url, **p)) for p in payloads]
                # every request of the burst is queued, or (a full batch) waits in the inbox
                # of the executor that is holding
                await until(lambda: accepted(model) == len(payloads))
            finally:
                served.hold.unlink()
            await holder
            return await asyncio.gather(*burst)

    def executions_now(name: str) -> float:
        return metric(server, "serve_executions_total", model_name=name)

    def accepted(name: str) -> float:
        described = request("GET", f"{server.management}/models/{name}").body
        queued = float(described[0]["jobQueueStatus"]["pendingRequests"])
        dispatched = metric(server, "serve_inferences_total", model_name=name) - inferences - 1
        return queued + dispatched

    replies = asyncio.run(run())
    assert (
        metric(server, "serve_inferences_total", model_name=model) - inferences == len(payloads) + 1
    )
    batches = metric(server, "serve_executions_total", model_name=model) - executions
    assert batches == 2, f"the holder and {len(payloads)} requests ran in {batches} batches"
    return replies


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` (it queries the server) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the server never reached the expected state")
        await asyncio.sleep(0.01)


def top(body: dict[str, float]) -> str:
    return max(body, key=lambda label: body[label])


def test_image_classifier_batch_of_formats(served: Served) -> None:
    payloads: list[dict[str, Any]] = [
        {"data": image(RED, (300, 200))},
        {"data": image(GREEN, (64, 64), "JPEG"), "headers": {"Content-Type": "image/jpeg"}},
        {"data": base64.b64encode(image(BLUE, (40, 90))).decode(), "headers": TEXT},
        {"data": form_field("data", image(RED, (10, 10), "BMP"), "red.bmp")},
    ]  # fmt: skip
    replies = predict(served, "colors", payloads)
    assert [r.status for r in replies] == [200] * 4
    assert [top(r.body) for r in replies] == ["red", "green", "blue", "red"]
    # topk 5 by default, capped at the model's 3 classes; labels from index_to_name.json
    assert all(set(r.body) == {"red", "green", "blue"} for r in replies)
    assert all(abs(sum(r.body.values()) - 1.0) < 1e-4 for r in replies)


def test_image_classifier_reads_handler_config(served: Served) -> None:
    as_list = torch.zeros(3, 16, 12)
    as_list[2] = 1.0  # blue after normalization
    payloads: list[dict[str, Any]] = [
        {"data": image(RED, (50, 30))},
        {"data": image(GREEN, (7, 7))},
        {"json": as_list.tolist()},
        {"data": image(BLUE, (12, 16))},
    ]
    replies = predict(served, "colors_small", payloads)
    assert [r.status for r in replies] == [200] * 4, [r.body for r in replies]
    assert [top(r.body) for r in replies] == ["red", "green", "blue", "blue"]
    assert all(len(r.body) == 2 for r in replies)  # topk: 2


def test_bad_inputs_fail_only_their_own_request(served: Served, server: Server) -> None:
    payloads: list[dict[str, Any]] = [
        {"data": image(GREEN, (32, 32))},
        {"data": b"this is not an image", "headers": {"x-request-id": "not-an-image"}},
        {"data": "%%% no base64 %%%", "headers": {**TEXT, "x-request-id": "b64"}},
        {"data": image(BLUE, (32, 32))},
    ]  # fmt: skip
    replies = predict(served, "colors", payloads)
    assert [r.status for r in replies] == [200, 400, 400, 200]
    assert [top(replies[0].body), top(replies[3].body)] == ["green", "blue"]
    for idx, request_id, reason in (
        (1, "not-an-image", "not a decodable image"),
        (2, "b64", "not valid base64"),
    ):
        body = replies[idx].body
        assert body["code"] == 400
        assert body["type"] == "BadRequestException"
        assert re.search(rf"request \d of the batch \(request id {request_id}\)", body["message"])
        assert reason in body["message"]

    wrong_shape = concurrently(
        f"{server.inference}/predictions/colors_small",
        [{"json": [[[1.0, 2.0]]]}, {"json": [["a"]]}, {"json": {"x": 1}}, {"data": b""}],
    )
    assert [r.status for r in wrong_shape] == [400] * 4
    assert "shape 1x1x2; this model takes 3x16x12" in wrong_shape[0].body["message"]
    assert "not a numeric" in wrong_shape[1].body["message"]
    assert "got dict" in wrong_shape[2].body["message"]

    still = request("POST", f"{server.inference}/predictions/colors", data=image(RED, (8, 8)))
    assert still.status == 200
    assert top(still.body) == "red"


def test_torchserve_style_subclass_of_the_builtin_handler(served: Served) -> None:
    payloads = [{"data": image(color, (20, 20))} for color in (BLUE, RED, GREEN, BLUE)]
    replies = predict(served, "custom", payloads)
    assert [(r.status, r.body) for r in replies] == [
        (200, b"blue"),
        (200, b"red"),
        (200, b"green"),
        (200, b"blue"),
    ]


def test_image_segmenter_per_pixel_classes(served: Served) -> None:
    payloads: list[dict[str, Any]] = [
        {"data": half_white(6, 4)},
        {"data": half_white(6, 4)},
        {"data": half_white(4, 2)},  # another size: runs as its own group
        {"data": b"GIF89a broken"},
    ]
    replies = predict(served, "segmenter", payloads)
    assert [r.status for r in replies] == [200, 200, 200, 400]
    for reply, (width, height) in zip(replies[:3], [(6, 4), (6, 4), (4, 2)], strict=True):
        pixels = reply.body
        assert (len(pixels), len(pixels[0]), len(pixels[0][0])) == (height, width, 2)
        for row in pixels:
            assert [cls for cls, _ in row] == [1.0] * (width // 2) + [0.0] * (width // 2)
            assert all(prob > 0.99 for _, prob in row)


@pytest.mark.parametrize("sizes", [[(10, 6)] * 4, [(10, 6), (10, 6), (8, 8), (5, 3)]])
def test_object_detector_threshold_and_labels(served: Served, sizes: list[tuple[int, int]]) -> None:
    colors = [WHITE, BLACK, WHITE, BLACK]
    replies = predict(
        served, "detector", [{"data": image(c, s)} for c, s in zip(colors, sizes, strict=True)]
    )
    assert [r.status for r in replies] == [200] * 4
    for reply, color, (width, height) in zip(replies, colors, sizes, strict=True):
        if color == BLACK:
            assert reply.body == []  # score 0 and 0.1: both under the 0.5 threshold
        else:
            assert reply.body == [{"person": [0.0, 0.0, width, height], "score": 1.0}]


def test_text_classifier_batches_every_request(served: Served) -> None:
    payloads: list[dict[str, Any]] = [
        {"data": "A <b>good</b>, GREAT movie!"},
        {"data": "Awful. Just bad.", "headers": {"Content-Type": "text/plain"}},
        {"data": "\xff\xfe not utf-8".encode("latin-1")},
        {"data": "not bad at all"},
    ]
    replies = predict(served, "text", payloads)
    assert [r.status for r in replies] == [200, 200, 400, 200]
    assert top(replies[0].body) == "positive"
    assert top(replies[1].body) == "negative"
    assert top(replies[3].body) == "positive"  # the bigram "not bad" outweighs "bad"
    assert set(replies[0].body) == {"negative", "positive"}
    assert "not valid UTF-8" in replies[2].body["message"]
