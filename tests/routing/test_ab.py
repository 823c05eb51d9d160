"""A/B testing end to end: traffic splits, sticky keys, shadow copies, over REST and gRPC."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import grpc
import pytest

from serve.routing.split import Split
from tests.helpers.clients import call_json, http, metric, wait_until
from tests.helpers.grpc_stubs import grpcio_stubs
from tests.helpers.server import (
    MAX_LOOP_LAG,
    HandlerSpec,
    Server,
    ServerFactory,
    loop_lag,
    model_folder,
    server_config,
)

KEYS = [f"user-{i}" for i in range(1000)]
Z_999 = 3.29  # two-sided 99.9% normal quantile

# Answers name the version that served them (body and header). A "plain" model answers the same
# for every version, except for the input "differ"; a "gated" one waits for its gate file.
AB = """
    import json
    import os
    import time

    VERSION = "{version}"
    MODE = "{mode}"

    def handle(data, context):
        if data is None:
            return None
        if MODE == "gated":
            store = os.path.dirname(context.system_properties["model_dir"])
            gate = os.path.join(store, context.model_name + "-" + VERSION + ".gate")
            while not os.path.exists(gate):  # the test opens the gate by creating the file
                time.sleep(0.01)
        out = []
        for idx, row in enumerate(data):
            value = row.get("body", row.get("data"))
            raw = isinstance(value, (bytes, bytearray))
            text = bytes(value).decode() if raw else json.dumps(value)
            context.set_response_header(idx, "X-Served-By", VERSION)
            if MODE == "plain" and text != "differ":
                out.append({{"input": text}})
            else:
                out.append({{"version": VERSION, "input": text}})
        return out
"""

BATCHING = {"batch_size": 32, "max_batch_delay": 5}


def _model(name: str, version: str, mode: str = "tagged") -> HandlerSpec:
    return HandlerSpec(AB.format(version=version, mode=mode), name=name, version=version)


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[Server]:
    models = {
        f"{name}-{version}": _model(name, version, mode)
        for name, version, mode in [
            ("ab", "1.0", "tagged"),
            ("ab", "2.0", "tagged"),
            ("ab", "3.0", "tagged"),
            ("sticky", "1.0", "tagged"),
            ("sticky", "2.0", "tagged"),
            ("mirror", "1.0", "plain"),
            ("mirror", "2.0", "plain"),
            ("mirror", "3.0", "plain"),
            ("blocked", "1.0", "plain"),
            ("blocked", "2.0", "gated"),
        ]
    }
    server = make_module_server(
        models,
        load=[
            "ab-1.0",
            "ab-2.0",
            "sticky-1.0",
            "sticky-2.0",
            "mirror-1.0",
            "mirror-2.0",
            "blocked-1.0",
            "blocked-2.0",
        ],
        enable_model_api=True,
        models={
            "ab": {"*": BATCHING, "traffic": {"1.0": 75, "2.0": 25}},
            "sticky": {"*": BATCHING},
            "mirror": {"*": BATCHING},
            "blocked": {"*": {**BATCHING, "response_timeout": 600}},
        },
    )
    yield server
    (server.store / "blocked-2.0.gate").touch()  # let a stuck shadow finish so the server drains


@pytest.fixture(autouse=True)
def loop_guard(server: Server) -> Iterator[None]:
    """Fail a test if the server's event loop was blocked while it ran (the metric is the
    worst lag since start: a new worst during this test above the bound is this test's)."""
    before = loop_lag(server)
    yield
    worst = loop_lag(server)
    if worst > before:
        assert worst < MAX_LOOP_LAG, f"the event loop was blocked for {worst:.3f}s"


# --- helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    version: str | None  # X-Model-Version
    served_by: str | None  # what the handler says
    body: Any


def predict_all(
    url: str, bodies: Sequence[bytes], keys: Sequence[str | None] | None = None, limit: int = 64
) -> list[Answer]:
    """POST every body at once (at most `limit` in flight), with its routing key if any."""

    async def run() -> list[Answer]:
        gate = asyncio.Semaphore(limit)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(body: bytes, key: str | None) -> Answer:
                headers = {"Content-Type": "application/octet-stream"}
                if key is not None:
                    headers["X-Routing-Key"] = key
                async with gate, session.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                    return Answer(
                        response.status,
                        response.headers.get("X-Model-Version"),
                        response.headers.get("X-Served-By"),
                        json.loads(raw),
                    )

            return await asyncio.gather(*(one(b, k) for b, k in zip(bodies, all_keys, strict=True)))

    all_keys = list(keys) if keys is not None else [None] * len(bodies)
    return asyncio.run(run())


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return call_json(method, url, body, headers={"Content-Type": "application/json"})


sample = metric  # the value of the series of a metric with these labels (0 when absent)


def answered(server: Server, model: str, version: str) -> float:
    """Requests a version answered without error, by serve_requests_total."""
    return sample(
        server, "serve_requests_total", model_name=model, model_version=version, outcome="ok"
    )


def bound(n: int, p: float) -> float:
    return Z_999 * math.sqrt(n * p * (1 - p))


# --- the weighted split ------------------------------------------------------------------


def test_serve_yaml_split_is_applied_and_read_back(server: Server) -> None:
    assert call("GET", f"{server.management}/models/ab/traffic") == (200, {"1.0": 75, "2.0": 25})
    status, described = call("GET", f"{server.management}/models/ab")
    assert status == 200
    assert described[0]["modelVersion"] == "1.0"  # describe shows the default, not a draw
    assert described[0]["trafficSplit"] == {"1.0": 75, "2.0": 25}


def test_4000_unversioned_requests_follow_a_75_25_split(server: Server) -> None:
    before = {v: answered(server, "ab", v) for v in ("1.0", "2.0")}
    n = 4000
    answers = predict_all(f"{server.inference}/predictions/ab", [b"x"] * n)
    assert {a.status for a in answers} == {200}
    for a in answers:
        assert a.version == a.served_by == a.body["version"]
    counts = Counter(a.version for a in answers)
    assert set(counts) == {"1.0", "2.0"}
    assert abs(counts["2.0"] - n * 0.25) < bound(n, 0.25), counts
    # the per-version counters see the same split
    for v in ("1.0", "2.0"):
        assert answered(server, "ab", v) - before[v] == counts[v]
    # batched: far fewer handler calls than requests
    executions = sum(
        sample(server, "serve_executions_total", model_name="ab", model_version=v)
        for v in ("1.0", "2.0")
    )
    assert executions < n


def test_a_named_version_is_never_redirected(server: Server) -> None:
    for path, version in [("ab/1.0", "1.0"), ("ab/2.0", "2.0")]:
        answers = predict_all(f"{server.inference}/predictions/{path}", [b"x"] * 40)
        assert {(a.version, a.body["version"]) for a in answers} == {(version, version)}
    status, raw = http("POST", f"{server.inference}/explanations/ab/2.0", b"x")
    assert (status, json.loads(raw)["version"]) == (200, "2.0")


PATHS = (
    "predictions/sticky",
    "explanations/sticky",
    "sticky/predict",
    "models/sticky/invoke",
    "invocations?model_name=sticky",
)


def test_other_inference_paths_use_the_split(server: Server) -> None:
    m = server.management
    assert call("PUT", f"{m}/models/sticky/traffic", {"1.0": 0, "2.0": 1})[0] == 200
    try:
        for path in PATHS:
            [answer] = predict_all(f"{server.inference}/{path}", [b"x"])
            assert (answer.status, answer.version, answer.body["version"]) == (200, "2.0", "2.0")
    finally:
        assert call("DELETE", f"{m}/models/sticky/traffic")[0] == 200
    [answer] = predict_all(f"{server.inference}/predictions/sticky", [b"x"])
    assert answer.version == "1.0"  # the default version alone again


# --- sticky assignment -------------------------------------------------------------------


def test_keys_keep_their_version_and_a_shift_moves_only_the_needed_keys(server: Server) -> None:
    m, url = server.management, f"{server.inference}/predictions/sticky"
    assert call("PUT", f"{m}/models/sticky/traffic", {"1.0": 90, "2.0": 10})[0] == 200
    try:
        first = predict_all(url, [b"k"] * len(KEYS), KEYS)
        again = predict_all(url, [b"k"] * len(KEYS), KEYS)
        placed = {k: a.version for k, a in zip(KEYS, first, strict=True)}
        assert placed == {k: a.version for k, a in zip(KEYS, again, strict=True)}
        assert all(a.version == a.body["version"] for a in first + again)
        share = sum(v == "2.0" for v in placed.values())
        assert abs(share - 100) < bound(1000, 0.1)
        # the server places keys exactly as the split's own hash does
        local = Split.parse({"1.0": 90, "2.0": 10})
        assert placed == {k: local.choose(k) for k in KEYS}

        assert call("PUT", f"{m}/models/sticky/traffic", {"1.0": 80, "2.0": 20})[0] == 200
        shifted = predict_all(url, [b"k"] * len(KEYS), KEYS)
        moves = Counter(
            (placed[k], a.version)
            for k, a in zip(KEYS, shifted, strict=True)
            if placed[k] != a.version
        )
        assert set(moves) == {("1.0", "2.0")}, moves  # only towards the gaining version
        assert abs(moves["1.0", "2.0"] - 100) < bound(1000, 0.1)
    finally:
        assert call("DELETE", f"{m}/models/sticky/traffic")[0] == 200


# --- shadow traffic ----------------------------------------------------------------------


def test_a_100_percent_shadow_sees_every_request_and_the_client_only_the_primary(
    server: Server,
) -> None:
    m = server.management
    split = {"1.0": 100, "shadow": {"2.0": 100}}
    assert call("PUT", f"{m}/models/mirror/traffic", split) == (
        200,
        {"status": 'Traffic split updated for model "mirror"'},
    )
    assert call("GET", f"{m}/models/mirror/traffic") == (200, split)
    labels = {"model_name": "mirror", "model_version": "2.0"}
    before = {
        outcome: sample(server, "serve_shadow_requests_total", outcome=outcome, **labels)
        for outcome in ("ok", "error", "dropped")
    }
    agreed = {
        result: sample(server, "serve_shadow_agreement_total", result=result, **labels)
        for result in ("equal", "different", "not_json")
    }
    try:
        bodies = [b"same"] * 150 + [b"differ"] * 50
        answers = predict_all(f"{server.inference}/predictions/mirror", bodies, limit=16)
        assert {(a.status, a.version, a.served_by) for a in answers} == {(200, "1.0", "1.0")}
        assert [a.body for a in answers[-50:]] == [{"version": "1.0", "input": "differ"}] * 50

        def shadow(outcome: str) -> float:
            value = sample(server, "serve_shadow_requests_total", outcome=outcome, **labels)
            return value - before[outcome]

        wait_until(lambda: shadow("ok") == 200, timeout=60.0)
        assert (shadow("error"), shadow("dropped")) == (0, 0)
        wait_until(
            lambda: (
                sample(server, "serve_shadow_agreement_total", result="different", **labels)
                - agreed["different"]
                == 50
            ),
            timeout=60.0,
        )
        equal = sample(server, "serve_shadow_agreement_total", result="equal", **labels)
        assert equal - agreed["equal"] == 150
        shadow_latency = sample(server, "serve_shadow_seconds_count", **labels)
        assert shadow_latency >= 200
        # shadow copies are not client requests of 2.0
        assert sample(server, "serve_requests_total", outcome="ok", **labels) == 0
    finally:
        assert call("DELETE", f"{m}/models/mirror/traffic")[0] == 200


def test_a_blocked_shadow_neither_slows_nor_fails_the_primary(server: Server) -> None:
    m = server.management
    assert (
        call("PUT", f"{m}/models/blocked/traffic", {"1.0": 100, "shadow": {"2.0": 100}})[0] == 200
    )
    labels = {"model_name": "blocked", "model_version": "2.0"}
    try:
        # 2.0's handler waits on a gate that stays shut: every copy sticks in its queue
        answers = predict_all(f"{server.inference}/predictions/blocked", [b"x"] * 300, limit=32)
        assert {(a.status, a.version) for a in answers} == {(200, "1.0")}
        dropped = sample(server, "serve_shadow_requests_total", outcome="dropped", **labels)
        assert dropped >= 300 - 64  # at most SHADOW_IN_FLIGHT copies wait; the rest are dropped
        assert sample(server, "serve_shadow_requests_total", outcome="ok", **labels) == 0
    finally:
        assert call("DELETE", f"{m}/models/blocked/traffic")[0] == 200
    # the primary keeps answering after the split is gone, while 2.0 is still stuck
    [answer] = predict_all(f"{server.inference}/predictions/blocked", [b"x"])
    assert (answer.status, answer.version) == (200, "1.0")


def test_unregistering_a_shadow_version_mid_traffic_never_fails_the_primary(
    server: Server,
) -> None:
    m = server.management
    assert call("POST", f"{m}/models?url=mirror-3.0&initial_workers=1")[0] == 200
    assert call("PUT", f"{m}/models/mirror/traffic", {"1.0": 100, "shadow": {"3.0": 100}})[0] == 200
    url = f"{server.inference}/predictions/mirror"

    async def run() -> tuple[list[int], int]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> int:
                async with session.post(url, data=str(i).encode()) as response:
                    await response.read()
                    assert response.headers["X-Model-Version"] == "1.0"
                    return response.status

            first = [asyncio.create_task(one(i)) for i in range(150)]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            async with session.delete(f"{m}/models/mirror/3.0") as removed:
                gone = removed.status
            rest = [asyncio.create_task(one(i)) for i in range(150)]
            return list(await asyncio.gather(*first, *rest)), gone

    statuses, gone = asyncio.run(run())
    assert gone == 200
    assert statuses == [200] * 300
    assert call("GET", f"{m}/models/mirror/traffic") == (200, {"1.0": 100})
    assert call("DELETE", f"{m}/models/mirror/traffic")[0] == 200
    assert "exception was never retrieved" not in server.log()
    assert "Traceback" not in server.log()


# --- management: errors, set-default, unregister ------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"1.0": 0, "2.0": 0}, 400, "add up to more than 0"),
        ({"1.0": -5, "2.0": 10}, 400, "'1.0': weight must be at least 0"),
        ({"1.0": "ninety"}, 400, "weight must be an integer"),
        ({"1.0": 50, "9.9": 50}, 400, "has no version 9.9"),
        ({"1.0": 100, "shadow": {"9.9": 10}}, 400, "has no version 9.9"),
        ({"1.0": 100, "shadow": {"2.0": 150}}, 400, "from 0 to 100"),
        ([1, 2], 400, "expected an object"),
        (b"{not json", 400, "must be a JSON object"),
    ],
)
def test_bad_splits_are_refused_with_400(
    server: Server, body: Any, status: int, fragment: str
) -> None:
    got, answer = call("PUT", f"{server.management}/models/sticky/traffic", body)
    assert (got, answer["code"], answer["type"]) == (status, status, "BadRequestException")
    assert fragment in answer["message"]
    assert call("GET", f"{server.management}/models/sticky/traffic") == (200, {"1.0": 100})


def test_unknown_models_get_404(server: Server) -> None:
    for method in ("GET", "PUT", "DELETE"):
        body = {"1.0": 1} if method == "PUT" else None
        status, answer = call(method, f"{server.management}/models/nope/traffic", body)
        assert (status, answer["type"]) == (404, "ModelNotFoundException")


def test_set_default_ends_the_split(server: Server) -> None:
    m = server.management
    assert call("PUT", f"{m}/models/sticky/traffic", {"2.0": 100})[0] == 200
    assert call("PUT", f"{m}/models/sticky/2.0/set-default")[0] == 200
    assert call("GET", f"{m}/models/sticky/traffic") == (200, {"2.0": 100})
    assert "trafficSplit" not in call("GET", f"{m}/models/sticky")[1][0]
    assert call("PUT", f"{m}/models/sticky/1.0/set-default")[0] == 200
    [answer] = predict_all(f"{server.inference}/predictions/sticky", [b"x"])
    assert answer.version == "1.0"


def test_unregistering_a_weighted_version_removes_it_and_never_leaves_nothing(
    server: Server,
) -> None:
    m = server.management
    assert call("POST", f"{m}/models?url=ab-3.0&initial_workers=1")[0] == 200
    try:
        assert call("PUT", f"{m}/models/ab/traffic", {"1.0": 0, "3.0": 10})[0] == 200
        status, answer = call("DELETE", f"{m}/models/ab/3.0")
        assert (status, answer["type"]) == (403, "InvalidModelVersionException")
        assert "last version with a weight" in answer["message"]
        [a] = predict_all(f"{server.inference}/predictions/ab", [b"x"])
        assert a.version == "3.0"

        split = {"1.0": 75, "2.0": 20, "3.0": 5, "shadow": {"3.0": 50}}
        assert call("PUT", f"{m}/models/ab/traffic", split)[0] == 200
        assert call("DELETE", f"{m}/models/ab/3.0")[0] == 200
        assert call("GET", f"{m}/models/ab/traffic") == (200, {"1.0": 75, "2.0": 20})
    finally:
        call("DELETE", f"{m}/models/ab/3.0")
        assert call("PUT", f"{m}/models/ab/traffic", {"1.0": 75, "2.0": 25})[0] == 200


def test_a_split_naming_an_unloaded_version_in_serve_yaml_exits_2(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    model_folder(store, "ab-1.0", _model("ab", "1.0").source, name="ab", version="1.0")
    config = server_config(
        store, load_models=["ab-1.0"], models={"ab": {"traffic": {"1.0": 50, "2.0": 50}}}
    )
    server = Server(tmp_path, config)
    with pytest.raises(RuntimeError):
        server.start()
    assert server.process is not None
    assert server.process.returncode == 2
    assert "models.ab.traffic" in server.log()
    assert "has no version 2.0" in server.log()


# --- gRPC ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return grpcio_stubs(tmp_path_factory.mktemp("stubs"))


def test_grpc_predictions_without_a_version_follow_the_split(
    server: Server, pb: dict[str, ModuleType]
) -> None:
    request = pb["inference_pb2"].PredictionsRequest
    with grpc.insecure_channel(server.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
        futures = []
        for _ in range(8):  # in waves of 50, as a pool of clients would send them
            wave = [
                stub.Predictions.future(request(model_name="ab", input={"data": b"g"}))
                for _ in range(50)
            ]
            futures += wave
            for future in wave:
                future.result()
        counts: Counter[str] = Counter()
        for future in futures:
            body = json.loads(future.result().prediction)
            trailing = dict(future.trailing_metadata())
            assert trailing["x-model-version"] == body["version"]
            counts[body["version"]] += 1
        assert abs(counts["2.0"] - 100) < bound(400, 0.25), counts

        named = stub.Predictions.with_call(
            request(model_name="ab", model_version="2.0", input={"data": b"g"}),
            metadata=(("x-routing-key", KEYS[0]),),
        )
        assert dict(named[1].trailing_metadata())["x-model-version"] == "2.0"

        # the routing key travels as metadata and lands where REST sends it
        rest = predict_all(f"{server.inference}/predictions/ab", [b"k"] * 50, KEYS[:50])
        for key, answer in zip(KEYS[:50], rest, strict=True):
            reply, call_ = stub.Predictions.with_call(
                request(model_name="ab", input={"data": b"k"}),
                metadata=(("x-routing-key", key),),
            )
            assert json.loads(reply.prediction)["version"] == answer.version
            assert dict(call_.trailing_metadata())["x-model-version"] == answer.version

        # the streaming calls route the same way
        placed = dict(zip(KEYS[:50], (a.version for a in rest), strict=True))
        one_each = [next(k for k, v in placed.items() if v == want) for want in ("1.0", "2.0")]
        for key in one_each:
            metadata = (("x-routing-key", key),)
            streamed = stub.StreamPredictions(
                request(model_name="ab", input={"data": b"k"}), metadata=metadata
            )
            assert [json.loads(r.prediction)["version"] for r in streamed] == [placed[key]]
            assert dict(streamed.trailing_metadata())["x-model-version"] == placed[key]
            both = stub.StreamPredictions2(
                iter([request(model_name="ab", input={"data": b"k"})] * 3), metadata=metadata
            )
            assert [json.loads(r.prediction)["version"] for r in both] == [placed[key]] * 3
