"""The management API end to end: register, list, describe, scale, versions, unregister."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import handlers as src
from tests.helpers.clients import call_json, http, metric_samples, poll
from tests.helpers.server import Server, ServerFactory, model_folder

pytestmark = pytest.mark.usefixtures("loop_guard")


def versioned(store: Path, folder: str, name: str, version: str) -> None:
    model_folder(store, folder, src.VERSIONED.format(version=version), name=name, version=version)


def test_register_describe_predict_scale_and_unregister(server: Server) -> None:
    store = server.root / "store"
    model_folder(store, "reg", src.ECHO)
    m = server.management

    status, body = call_json(
        "POST", f"{m}/models?url=reg&initial_workers=1&batch_size=4&max_batch_delay=7"
    )
    assert status == 200
    assert body == {"status": 'Model "reg" Version: 1.0 registered with 1 initial workers'}

    status, body = call_json("POST", f"{m}/models?url=reg")
    assert status == 409
    assert body["type"] == "ConflictStatusException"

    status, described = call_json("GET", f"{m}/models/reg")
    assert status == 200
    [d] = described
    assert list(d)[:5] == ["modelName", "modelVersion", "modelUrl", "runtime", "minWorkers"]
    assert (d["modelName"], d["modelVersion"], d["batchSize"], d["maxBatchDelay"]) == (
        "reg",
        "1.0",
        4,
        7,
    )
    assert [w["status"] for w in d["workers"]] == ["READY"]
    assert d["workers"][0]["id"].isdigit()
    assert d["jobQueueStatus"] == {"remainingCapacity": 100, "pendingRequests": 0}

    assert http("POST", server.inference + "/predictions/reg", b"x")[0] == 200

    status, body = call_json("PUT", f"{m}/models/reg?min_worker=2&synchronous=true")
    assert (status, body) == (200, {"status": "Workers scaled to 2 for model: reg"})
    assert len(call_json("GET", f"{m}/models/reg")[1][0]["workers"]) == 2

    status, body = call_json("PUT", f"{m}/models/reg?min_worker=1")
    assert (status, body) == (202, {"status": "Processing worker updates..."})

    status, body = call_json("DELETE", f"{m}/models/reg")
    assert (status, body) == (200, {"status": 'Model "reg" unregistered'})
    assert call_json("GET", f"{m}/models/reg")[0] == 404
    assert http("POST", server.inference + "/predictions/reg", b"x")[0] == 404


def test_registration_accepts_a_json_body_and_async_mode(server: Server) -> None:
    model_folder(server.root / "store", "viajson", src.ECHO)
    body = json.dumps({"url": "viajson", "initial_workers": 1, "synchronous": False}).encode()
    status, answer = http(
        "POST", server.management + "/models", body, headers={"Content-Type": "application/json"}
    )
    assert (status, json.loads(answer)) == (202, {"status": "Processing worker updates..."})
    assert call_json("GET", server.management + "/models/viajson")[0] == 200
    assert call_json("DELETE", server.management + "/models/viajson")[0] == 200
    status, answer = http(
        "POST", server.management + "/models", b"[1]", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert "JSON request body must be an object" in json.loads(answer)["message"]


def test_a_huge_number_in_a_json_registration_is_a_400_naming_it(server: Server) -> None:
    for field, value in (("batch_size", "9" * 23), ("response_timeout", "1e300"),
                         ("batch_size", "1.5"), ("initial_workers", "0.25")):  # fmt: skip
        body = f'{{"url": "echo", "model_name": "huge", "{field}": {value}}}'.encode()
        status, answer = http(
            "POST",
            server.management + "/models",
            body,
            headers={"Content-Type": "application/json"},
        )
        assert status == 400
        assert f"Parameter {field} must be" in json.loads(answer)["message"]
    assert call_json("GET", f"{server.management}/models/huge")[0] == 404


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("", 400, "Parameter url is required."),
        ("?url=missing.mar", 404, "Model not found at: missing.mar"),
        ("?url=../etc", 404, "Relative path is not allowed"),
        ("?url=echo&initial_workers=abc", 400, "initial_workers must be an integer"),
        ("?url=echo&initial_workers=-1", 400, "initial_workers must be at least 0"),
        ("?url=echo&batch_size=0", 400, "batch_size must be at least 1"),
        ("?url=echo&response_timeout=-5", 400, "response_timeout must be greater than 0"),
        ("?url=echo&synchronous=maybe", 400, "synchronous must be true or false"),
        ("?url=echo&batchsize=4", 400, "did you mean 'batch_size'"),
        ("?url=echo&model_name=a/b", 400, "Invalid model_name"),
        ("?url=echo&model_name=..", 400, "Invalid model_name"),
        ("?url=echo&runtime=java", 400, "Invalid runtime"),
        # TorchServe's parameters are Java ints: a huge value is refused, naming the range
        *(
            (f"?url=echo&{name}={'9' * 23}", 400, f"{name} must be at most {limit}")
            for name, limit in (
                ("batch_size", "2147483647 (from 1 to 2147483647)"),
                ("initial_workers", "256 (from 0 to 256)"),
                ("max_batch_delay", "2147483647 (from 0 to 2147483647)"),
            )
        ),
        *(
            (
                f"?url=echo&{name}={value}",
                400,
                f"{name} must be greater than 0 and at most 2147483647",
            )
            for name in ("response_timeout", "startup_timeout")
            for value in ("9" * 23, "1e300", "inf")
        ),
        ("?url=echo", 409, "already registered"),
    ],
)
def test_bad_registrations_get_clear_4xx(
    server: Server, query: str, status: int, fragment: str
) -> None:
    got, body = call_json("POST", f"{server.management}/models{query}")
    assert got == status
    assert body["code"] == status
    assert fragment in body["message"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("?min_worker=-1", "min_worker must be at least 0"),
        ("?min_worker=x", "min_worker must be an integer"),
        ("?min_worker=3&max_worker=2", "max_worker cannot be less than min_worker."),
        ("?min_worker=1&synchronous=perhaps", "synchronous must be true or false"),
        ("?minworker=1", "did you mean 'min_worker'"),
        (f"?min_worker={'9' * 23}", "min_worker must be at most 256 (from 0 to 256), got 9999"),
    ],
)
def test_bad_scale_parameters_are_400s(server: Server, query: str, fragment: str) -> None:
    status, body = call_json("PUT", f"{server.management}/models/echo{query}")
    assert status == 400
    assert fragment in body["message"]


def test_list_models_pages_by_name(server: Server) -> None:
    status, body = call_json("GET", f"{server.management}/models?limit=2")
    assert status == 200
    assert [m["modelName"] for m in body["models"]] == ["devices", "echo"]
    assert body["nextPageToken"] == "2"
    _, rest = call_json("GET", f"{server.management}/models?limit=100&next_page_token=2")
    assert "nextPageToken" not in rest
    assert "failing" in [m["modelName"] for m in rest["models"]]
    assert call_json("GET", f"{server.management}/models?limit=abc")[0] == 400


def test_versions_live_side_by_side_with_a_default(server: Server) -> None:
    store = server.root / "store"
    versioned(store, "ab-v1", "ab", "1.0")
    versioned(store, "ab-v2", "ab", "2.0")
    m, i = server.management, server.inference
    assert call_json("POST", f"{m}/models?url=ab-v1&initial_workers=1")[0] == 200
    assert call_json("POST", f"{m}/models?url=ab-v2&initial_workers=1")[0] == 200

    assert call_json("POST", f"{i}/predictions/ab")[1] == {"version": "1.0"}
    assert call_json("POST", f"{i}/predictions/ab/2.0")[1] == {"version": "2.0"}
    assert call_json("POST", f"{i}/predictions/ab/1.0")[1] == {"version": "1.0"}
    _, described = call_json("GET", f"{m}/models/ab/all")
    assert [d["modelVersion"] for d in described] == ["1.0", "2.0"]
    assert call_json("GET", f"{m}/models/ab/2.0")[1][0]["modelVersion"] == "2.0"

    status, body = call_json("PUT", f"{m}/models/ab/3.0/set-default")
    assert (status, body["type"]) == (404, "ModelVersionNotFoundException")
    status, body = call_json("PUT", f"{m}/models/ab/2.0/set-default")
    assert body == {"status": 'Default version successfully updated for model "ab" to "2.0"'}
    assert call_json("POST", f"{i}/predictions/ab")[1] == {"version": "2.0"}

    status, body = call_json("DELETE", f"{m}/models/ab")
    assert (status, body["type"]) == (403, "InvalidModelVersionException")
    status, body = call_json("DELETE", f"{m}/models/ab/7.0")
    assert (status, body["type"]) == (404, "ModelVersionNotFoundException")
    assert call_json("DELETE", f"{m}/models/ab/1.0")[0] == 200
    assert call_json("POST", f"{i}/predictions/ab/1.0")[0] == 404
    assert call_json("DELETE", f"{m}/models/ab")[0] == 200
    assert call_json("GET", f"{m}/models/ab")[0] == 404


def test_round_robin_over_configured_devices_follows_scaling(server: Server) -> None:
    m = server.management

    def gpu_ids() -> list[int]:
        workers = call_json("GET", f"{m}/models/devices")[1][0]["workers"]
        assert all(w["gpu"] for w in workers)
        return sorted(w["gpuId"] for w in workers)

    assert gpu_ids() == [0]
    assert call_json("PUT", f"{m}/models/devices?min_worker=4&synchronous=true")[0] == 200
    assert gpu_ids() == [0, 1, 2, 3]
    seen = {
        call_json("POST", f"{server.inference}/predictions/devices", b"x")[1]["gpu_id"]
        for _ in range(12)
    }
    assert seen <= {0, 1, 2, 3}
    assert call_json("PUT", f"{m}/models/devices?min_worker=2&synchronous=true")[0] == 200
    assert gpu_ids() == [0, 1]
    assert call_json("PUT", f"{m}/models/devices?min_worker=3&synchronous=true")[0] == 200
    assert gpu_ids() == [0, 1, 2]
    described = call_json("GET", f"{m}/models/devices")[1][0]
    assert (described["deviceType"], described["deviceIds"]) == ("gpu", [0, 1, 2, 3])


def test_model_api_is_off_unless_enabled(make_server: ServerFactory) -> None:
    server = make_server({"echo": src.ECHO}, ready=False)
    status, body = call_json("POST", f"{server.management}/models?url=echo")
    assert status == 405
    assert "--enable-model-api" in body["message"]
    assert call_json("DELETE", f"{server.management}/models/echo")[0] == 405
    # scale, describe and list always work
    assert call_json("PUT", f"{server.management}/models/echo?min_worker=1")[0] == 202
    assert call_json("GET", f"{server.management}/models")[0] == 200


def test_a_customized_describe_never_shares_a_batch(server: Server) -> None:
    """The handler answers a describe call for its whole batch, so it must go alone."""
    predict = f"{server.inference}/predictions/gated4"
    key = (("model_name", "gated4"), ("model_version", "1.0"))

    def pending() -> int:
        return int(
            call_json("GET", f"{server.management}/models/gated4")[1][0]["jobQueueStatus"][
                "pendingRequests"
            ]
        )

    async def main() -> tuple[list[tuple[int, Any]], Any]:
        loop = asyncio.get_running_loop()

        def post() -> tuple[int, Any]:
            return call_json("POST", predict, b"x")

        holder = loop.run_in_executor(None, post)  # holds the executor at the gate
        await poll(lambda: metric_samples(server, "serve_executions_total").get(key, 0) >= 1)
        calls = [loop.run_in_executor(None, post) for _ in range(2)]
        await poll(lambda: pending() == 2)
        describe = loop.run_in_executor(
            None, call_json, "GET", f"{server.management}/models/gated4?customized=true"
        )
        await poll(lambda: pending() == 3)
        (server.root / "store" / "gated4.gate").touch()
        answers = await asyncio.gather(holder, *calls)
        return answers, (await describe)[1]

    answers, described = asyncio.run(main())
    # the gated handler answers each request with the size of the batch it was in
    assert answers == [(200, 1), (200, 2), (200, 2)]
    assert described[0]["customizedMetadata"] == 1


def test_racing_registers_unregisters_and_scales_leave_a_consistent_model(server: Server) -> None:
    """A burst of concurrent calls on one model: each gets a JSON answer (200, 404 or 409)
    and whatever state wins is whole: registered with READY workers that serve, or gone."""
    model_folder(server.root / "store", "racy", src.ECHO)
    m = server.management
    calls = [
        ("POST", f"{m}/models?url=racy&initial_workers=1&synchronous=true"),
        ("DELETE", f"{m}/models/racy"),
        ("PUT", f"{m}/models/racy?min_worker=2&synchronous=true"),
    ] * 6

    async def main() -> list[tuple[int, Any]]:
        return await asyncio.gather(
            *(asyncio.to_thread(call_json, method, url) for method, url in calls)
        )

    answers = asyncio.run(main())
    for status, body in answers:
        assert status in (200, 202, 404, 409), (status, body)  # never 500, never 206
        assert set(body) == ({"status"} if status in (200, 202) else {"code", "type", "message"})
    status, body = call_json("GET", f"{m}/models/racy")
    if status == 404:
        assert body["type"] == "ModelNotFoundException"
        return
    assert status == 200
    [described] = body

    def settled() -> bool:
        workers = call_json("GET", f"{m}/models/racy")[1][0]["workers"]
        return bool(workers) and all(w["status"] == "READY" for w in workers)

    asyncio.run(poll(settled))
    status, raw = http("POST", f"{server.inference}/predictions/racy", b'"still here"')
    assert status == 200, raw
    assert call_json("DELETE", f"{m}/models/racy")[0] == 200
    assert described["modelName"] == "racy"


def test_an_archive_asking_for_more_than_256_workers_is_refused(server: Server) -> None:
    model_folder(server.root / "store", "greedy", src.ECHO, model_config={"minWorkers": 300})
    status, body = call_json("POST", f"{server.management}/models?url=greedy")
    assert status == 400
    assert body["type"] == "InvalidModelException"
    assert "minWorkers must be at most 256" in body["message"]
    assert call_json("GET", f"{server.management}/models/greedy")[0] == 404
