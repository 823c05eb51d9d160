"""Models for the Open Inference Protocol tests (REST, gRPC and the client libraries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.server import HandlerSpec, Server, ServerFactory

# A tensor handler declaring its tensors on the class; `rows` tells how many rows the call saw.
# With a gate file present it waits, so tests can hold the executor and queue a burst.
SCALE = """
    import os
    import time

    import torch

    from handlers.tensor import TensorHandler, TensorSpec


    class Scale(TensorHandler):
        inputs = [TensorSpec("x", "FP32", (-1, 4))]
        outputs = [TensorSpec("y", "FP32", (-1, 4)), TensorSpec("rows", "INT64", (-1,))]

        def infer(self, inputs):
            store = os.path.dirname(self.context.system_properties["model_dir"])
            gate = os.path.join(store, self.context.model_name + ".hold")
            while os.path.exists(gate):  # the test removes the file to let the batch run
                time.sleep(0.01)
            x = inputs["x"]
            return {"y": x * 2, "rows": torch.full((x.shape[0],), x.shape[0], dtype=torch.int64)}
"""

# A tensor handler declared in model-config.yaml, over every kind of datatype the tests use.
KINDS = """
    import torch

    from handlers.tensor import TensorHandler


    class Kinds(TensorHandler):
        def infer(self, inputs):
            return {
                "half": inputs["half"] + 1,
                "flags": ~inputs["flags"],
                "ints": inputs["ints"] * 10,
                "words": [w[::-1] for w in inputs["words"]],
            }
"""

KINDS_CONFIG: dict[str, Any] = {
    "inputs": [
        {"name": "half", "datatype": "FP16", "shape": [-1, 2]},
        {"name": "flags", "datatype": "BOOL", "shape": [-1, 2]},
        {"name": "ints", "datatype": "INT64", "shape": [-1, 2]},
        {"name": "words", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [
        {"name": "half", "datatype": "FP16", "shape": [-1, 2]},
        {"name": "flags", "datatype": "BOOL", "shape": [-1, 2]},
        {"name": "ints", "datatype": "INT64", "shape": [-1, 2]},
        {"name": "words", "datatype": "BYTES", "shape": [-1]},
    ],
}

# What the tests send the "kinds" model: input name -> (array, OIP datatype).
KIND_TENSORS: dict[str, tuple[np.ndarray, str]] = {
    "half": (np.array([[0.5, 1.5], [2.0, -1.0]], np.float16), "FP16"),
    "flags": (np.array([[True, False], [False, False]]), "BOOL"),
    "ints": (np.array([[2**40, -3], [0, 7]], np.int64), "INT64"),
    "words": (np.array([b"hello", b"ab"], dtype=np.object_), "BYTES"),
}

# A TorchServe-style handler reading what the envelopes hand it: per v2 input a dict whose
# "data" is a nested list (kservev2), per v1 instance the instance itself (kserve); it answers
# the sum of each (negated when asked to explain).
SUMS = """
    import os
    import time

    def handle(data, context):
        if data is None:
            return None
        store = os.path.dirname(context.system_properties["model_dir"])
        while os.path.exists(os.path.join(store, "sums.hold")):
            time.sleep(0.01)

        def total(value):
            return sum(total(v) for v in value) if isinstance(value, list) else value

        sign = -1 if context.get_request_header(0, "explain") == "True" else 1
        rows = [row["data"] if isinstance(row, dict) else row for row in data]
        return [[sign * total(row)] for row in rows]
"""

# A TorchServe-style handler answering, per input, a dict of what it was handed (as TorchServe
# 0.12's VisionHandler reads it: row["data"]); a str input of "fail" fails its request the way
# TorchServe handlers do, with a 400 status and an error dict.
ECHO = """
    def handle(data, context):
        if data is None:
            return None
        answers = []
        for idx, row in enumerate(data):
            if row["data"] == "fail":
                context.set_response_status(400, "Bad Request", idx)
                answers.append({"code": 400, "type": "BadRequest", "message": "fail was sent"})
                continue
            value = row["data"]
            kind = type(value).__name__
            answers.append({"keys": sorted(row), "shape": row["shape"], "type": kind,
                            "data": value if kind != "bytes" else len(value)})
        return answers
"""

# A tensor handler without declarations that answers one row whatever it is given.
ONE_ROW = """
    from handlers.tensor import TensorHandler


    class OneRow(TensorHandler):
        def infer(self, inputs):
            return {"y": inputs["x"][:1]}
"""

VERSION = """
    def handle(data, context):
        if data is None:
            return None
        return [[float(context.manifest["model"]["modelVersion"])] for _ in data]
"""

LOADED = ["scale", "kinds", "sums", "echo", "ver1", "ver2", "onerow"]


def start_with(make: ServerFactory, max_request_size: int = 65536) -> Server:
    """A server with the OIP test models, ready; `make` stops and checks it."""
    return make(
        {
            "scale": SCALE,
            "kinds": HandlerSpec(KINDS, model_config=KINDS_CONFIG),
            "sums": SUMS,
            "echo": ECHO,
            "onerow": ONE_ROW,
            "ver1": HandlerSpec(VERSION, name="ver", version="1.0"),
            "ver2": HandlerSpec(VERSION, name="ver", version="2.0"),
        },
        load=LOADED,
        max_request_size=max_request_size,
        models={
            "scale": {"1.0": {"batch_size": 8, "max_batch_delay": 5000}},
            "sums": {"1.0": {"batch_size": 8, "max_batch_delay": 5000}},
        },
    )


def start(root: Path, max_request_size: int = 65536) -> Server:
    """`start_with` for callers that stop the server themselves (kept for older test files)."""
    return start_with(ServerFactory(root), max_request_size)


def serving(root: Path) -> Iterator[Server]:
    """A fixture body: the server, stopped and checked afterwards (kept for older test files)."""
    factory = ServerFactory(root)
    yield start_with(factory)
    factory.close()
