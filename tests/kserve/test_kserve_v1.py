"""KServe v1 on the inference port: instances as batch entries, shared across requests, each
request answered with exactly its own predictions; readiness, model list and errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import handlers as src
from tests.helpers.clients import call_json, http, metric, poll
from tests.helpers.server import Server, ServerFactory

EXECUTIONS = "serve_executions_total"
JSON = {"Content-Type": "application/json"}

# The gate-file handler, answering each instance with what the handler saw of it.
INSTANCES = src.gated("""
    def answer(data, context):
        return [
            {
                "echo": item,
                "batch": len(data),
                "explain": context.get_request_header(idx, "explain"),
                "id": context.get_request_id(idx),
            }
            for idx, item in enumerate(data)
        ]
""")

SHORT = """
    def handle(data, context):
        if data is None:
            return None
        return [1] * (len(data) - 1) if data and data[0] == "short" else [x for x in data]
"""


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    server = make_module_server(
        {"batched": INSTANCES, "single": INSTANCES, "short": SHORT},
        max_request_size=4096,
        models={
            "batched": {"1.0": {"batch_size": 8, "max_batch_delay": 5000}},
            "single": {"1.0": {"batch_size": 1}},
        },
    )
    (server.store / "single.gate").touch()
    return server


def post(server: Server, path: str, body: Any) -> tuple[int, Any]:
    return call_json("POST", server.inference + path, body, headers=JSON)


def counter(server: Server, name: str, model: str) -> float:
    return metric(server, name, model_name=model, model_version="1.0")


def pending(server: Server, model: str) -> int:
    status, body = http("GET", f"{server.management}/models/{model}")
    assert status == 200
    return int(json.loads(body)[0]["jobQueueStatus"]["pendingRequests"])


def test_predict_answers_one_prediction_per_instance(server: Server) -> None:
    status, body = post(server, "/v1/models/single:predict", {"instances": [1, {"a": 2}, "x"]})
    assert status == 200
    assert [p["echo"] for p in body["predictions"]] == [1, {"a": 2}, "x"]
    # more instances than batch_size 1: the request runs alone, as TorchServe's envelope does
    assert {p["batch"] for p in body["predictions"]} == {3}
    assert {p["explain"] for p in body["predictions"]} == {"False"}


def test_explain_answers_explanations(server: Server) -> None:
    status, body = post(server, "/v1/models/single:explain", {"instances": [[1, 2]]})
    assert status == 200
    assert body["explanations"][0]["echo"] == [1, 2]
    assert body["explanations"][0]["explain"] == "True"


def test_concurrent_requests_share_a_batch_and_get_their_own_predictions(server: Server) -> None:
    gate = Path(server.config["model_store"]) / "batched.gate"
    url = f"{server.inference}/v1/models/batched:predict"
    executions = counter(server, EXECUTIONS, "batched")
    inferences = counter(server, "serve_inferences_total", "batched")
    requests = [[f"r{r}-i{i}" for i in range(2)] for r in range(4)]  # 4 x 2 = batch_size

    async def run() -> tuple[Any, list[Any]]:
        async with aiohttp.ClientSession() as session:

            async def send(instances: list[Any]) -> Any:
                async with session.post(url, json={"instances": instances}) as reply:
                    assert reply.status == 200, await reply.text()
                    return await reply.json()

            try:
                holder = asyncio.create_task(send(["holder"]))
                await poll(lambda: counter(server, EXECUTIONS, "batched") > executions)
                burst = [asyncio.create_task(send(instances)) for instances in requests]
                # every request is queued, or (a full batch) waits behind the held one
                await poll(lambda: accepted() == 2 * len(requests))
            finally:
                gate.touch()
            return await holder, await asyncio.gather(*burst)

    def accepted() -> float:
        dispatched = counter(server, "serve_inferences_total", "batched") - inferences - 1
        return 2 * pending(server, "batched") + dispatched

    held, replies = asyncio.run(run())
    gate.unlink()
    assert [p["echo"] for p in held["predictions"]] == ["holder"]
    for instances, reply in zip(requests, replies, strict=True):
        assert [p["echo"] for p in reply["predictions"]] == instances
        assert {p["batch"] for p in reply["predictions"]} == {8}  # all four in one handler call
        assert len({p["id"] for p in reply["predictions"]}) == 1  # its own request id
    assert counter(server, EXECUTIONS, "batched") - executions == 2
    assert counter(server, "serve_inferences_total", "batched") - inferences == 9


def test_readiness_and_model_list_on_the_inference_port(server: Server) -> None:
    status, body = http("GET", f"{server.inference}/v1/models/single")
    assert (status, json.loads(body)) == (200, {"name": "single", "ready": True})
    status, body = http("GET", f"{server.inference}/v1/models")
    assert (status, json.loads(body)) == (200, {"models": ["batched", "short", "single"]})


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "nope"),
        ("/v1/models/single:predict", {"instance": [1]}, 400, "instances"),
        ("/v1/models/single:predict", {"instances": []}, 400, "instances"),
        ("/v1/models/single:predict", b"{not json", 400, "JSON"),
        ("/v1/models/single:predict", {"instances": ["x" * 5000]}, 413, "max_request_size"),
        ("/v1/models/short:predict", {"instances": ["short", 2]}, 503, "mismatched"),
    ],
)
def test_errors_use_the_kserve_error_body(
    server: Server, path: str, body: Any, status: int, words: str
) -> None:
    got, reply = post(server, path, body)
    assert got == status
    assert set(reply) == {"error"}
    assert words in reply["error"], reply


def test_unknown_model_readiness_is_404(server: Server) -> None:
    status, body = http("GET", f"{server.inference}/v1/models/nope")
    assert status == 404
    assert "nope" in json.loads(body)["error"]
