"""The handler sources the end-to-end tests serve, written as TorchServe users write them."""

ECHO = """
    import time

    def handle(data, context):
        if data is None:  # TorchServe calls a function entry once at load time
            return None
        out = []
        for idx, row in enumerate(data):
            value = row.get("body", row.get("data"))
            raw = isinstance(value, (bytes, bytearray))
            shown = value.decode("utf-8", "replace") if raw else value
            if shown == "teapot":
                context.set_response_status(418, "I'm a teapot", idx)
                context.set_response_header(idx, "X-Custom", "yes")
            if isinstance(shown, dict) and "sleep" in shown:
                time.sleep(shown["sleep"])
            out.append({
                "batch": len(data),
                "gpu_id": context.system_properties["gpu_id"],
                "type": type(value).__name__,
                "input": shown,
                "keys": sorted(row),
                "request_id": context.get_request_id(idx),
                "x_test": context.get_request_header(idx, "X-Test"),
                "url_path": context.get_request_header(idx, "url_path"),
                "explain": context.get_request_header(idx, "explain"),
                "yaml": context.model_yaml_config.get("handler"),
            })
        return out
"""

KINDS = """
    import torch
    from ts.metrics.dimension import Dimension
    from ts.metrics.metric_type_enum import MetricTypes

    def handle(data, context):
        if data is None:
            return None
        out = []
        for idx, row in enumerate(data):
            kind = row["body"]
            kind = kind.decode() if isinstance(kind, (bytes, bytearray)) else kind
            if kind == "bytes":
                out.append(b"\\x00\\x01raw")
            elif kind == "str":
                out.append("plain text")
            elif kind == "tensor":
                out.append(torch.tensor([1.0, 2.0]))
            elif kind == "typed":
                context.set_response_content_type(idx, "application/x-custom")
                out.append(b"custom")
            elif kind == "metrics":
                context.metrics.add_counter("KindsCalls", 2)
                context.metrics.add_time("KindsTime", 12.5, dimensions=[Dimension("Stage", "all")])
                hist = context.metrics.add_metric_to_cache(
                    "KindsSizes", "B", ["Dim"], MetricTypes.HISTOGRAM
                )
                hist.add_or_update(3.0, ["x"])
                out.append("recorded")
            else:
                out.append({"kind": kind})
        return out
"""

FAILING = """
    from ts.utils.util import PredictionException

    def handle(data, context):
        if data is None:
            return None
        command = data[0].get("body")
        if isinstance(command, (bytes, bytearray)):
            command = command.decode()
        if command == "boom":
            raise ValueError("boom")
        if command == "custom":
            raise PredictionException("custom failure", 418)
        if command == "short":
            return []
        if command == "notalist":
            return "not a list"
        if command == "weird":
            return [object()]
        if command == "oom":
            raise MemoryError()
        return ["ok"] * len(data)
"""

# Waits for <store>/<model>.gate (the test opens the gate by creating the file), then answers
# with the `answer(data, context)` that `gated` appends.
_GATE = """
    import os
    import time

    def handle(data, context):
        if data is None:
            return None
        store = os.path.dirname(context.system_properties["model_dir"])
        gate = os.path.join(store, context.model_name + ".gate")
        while not os.path.exists(gate):  # the test opens the gate by creating the file
            time.sleep(0.01)
        return answer(data, context)
"""


def gated(answer: str) -> str:
    """The gate-file handler with this `def answer(data, context)` (indented by 4, as here)."""
    return _GATE + answer


# Answers each entry its batch's size.
GATED = gated("""
    def answer(data, context):
        return [len(data)] * len(data)
""")

HANGING = """
    import time

    def handle(data, context):
        if data is None:
            return None
        if data[0].get("body") == "hang":
            time.sleep(600)
        return ["ok"] * len(data)
"""

STREAMING = """
    from ts.handler_utils.utils import send_intermediate_predict_response

    def handle(data, context):
        if data is None:
            return None
        for i in range(3):
            send_intermediate_predict_response(
                [f"chunk{i};"] * len(data), context.request_ids, "Intermediate", 200, context
            )
        return ["done"] * len(data)
"""

FAILS_TO_LOAD = """
    def handle(data, context):
        raise RuntimeError("this model cannot load")
"""

VERSIONED = """
    VERSION = "{version}"

    def handle(data, context):
        if data is None:
            return None
        return [{{"version": VERSION}} for _ in data]
"""

# A handler in a class, subclassing TorchServe's BaseHandler, for an eager model (model.py +
# state_dict), packaged by the real torch-model-archiver.
TS_CLASS_HANDLER = """
    import torch
    from ts.torch_handler.base_handler import BaseHandler


    class ScaleHandler(BaseHandler):
        def preprocess(self, data):
            rows = [row.get("data") or row.get("body") for row in data]
            return torch.tensor(rows, dtype=torch.float32)

        def postprocess(self, output):
            return output.tolist()

        def describe_handle(self):
            return {"factor": float(self.model.factor), "device": str(self.device)}
"""

TS_MODEL = """
    import torch


    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return x * self.factor
"""

PARAMS = """
    def handle(data, context):
        if data is None:
            return None
        return [
            [[k, v.decode() if isinstance(v, (bytes, bytearray)) else v] for k, v in row.items()]
            for row in data
        ]
"""

# A TorchServe BaseHandler subclass that doubles each entry: v1 instances ({"data": [...]}) or
# v2 inputs as nested lists, as the kserve and kservev2 envelopes hand them.
TS_DOUBLER = """
    import torch
    from ts.torch_handler.base_handler import BaseHandler


    class Doubler(BaseHandler):
        def initialize(self, context):
            self.context = context
            self.initialized = True

        def preprocess(self, data):
            rows = [row.get("data") if isinstance(row, dict) else row for row in data]
            return [torch.tensor(row, dtype=torch.float32) for row in rows]

        def inference(self, data):
            return [tensor * 2 for tensor in data]

        def postprocess(self, data):
            return [tensor.tolist() for tensor in data]
"""

# Answers the same bytes for the same input on REST and gRPC (the gRPC server's "kinds" model).
TEXT_KINDS = """
    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            value = row.get("body", row.get("data"))
            out.append({"type": type(value).__name__, "text": bytes(value).decode()})
        return out
"""

# Streams one chunk, then fails: the stream breaks after its first message.
BREAKING = """
    from ts.handler_utils.utils import send_intermediate_predict_response

    def handle(data, context):
        if data is None:
            return None
        send_intermediate_predict_response(
            ["partial"] * len(data), context.request_ids, "Intermediate", 200, context
        )
        raise ValueError("broken after the first chunk")
"""
