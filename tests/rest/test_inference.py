"""The inference API end to end: request forms, responses, batching, concurrency, errors."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.clients import http, metric_samples, run
from tests.helpers.server import Server

pytestmark = pytest.mark.usefixtures("loop_guard")


async def _post(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.post(url, **kwargs) as response:
        return response.status, response.headers.copy(), await response.read()


def test_ping_and_api_description(server: Server) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.inference + "/ping") as r:
                assert r.status == 200
                assert await r.json() == {"status": "Healthy"}
            async with s.options(server.inference + "/") as r:
                doc = await r.json()
                assert r.status == 200
                assert doc["openapi"].startswith("3.")
                assert "/predictions/{model_name}" in doc["paths"]
            async with s.get(server.inference + "/api-description") as r:
                assert (await r.json())["openapi"] == doc["openapi"]
            async with s.get(server.inference + "/") as r:
                assert r.status == 405
                assert (await r.json())["type"] == "MethodNotAllowedException"

    run(main())


def test_json_text_raw_bytes_and_forms_reach_the_handler_as_torchserve_sends_them(
    server: Server,
) -> None:
    url = server.inference + "/predictions/echo"

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s:
            form = aiohttp.FormData()
            form.add_field("data", b"\x89PNG", filename="x.png", content_type="image/png")
            form.add_field("note", "plain field")
            results = [
                await _post(s, url, json={"a": [1, 2]}),
                await _post(s, url, data="hello", headers={"Content-Type": "text/plain"}),
                await _post(
                    s, url, data=b"\x00\x01", headers={"Content-Type": "application/octet-stream"}
                ),
                await _post(s, url, data=form),
                await _post(s, url, data={"data": "x y", "other": "z"}),
                await _post(
                    s, url, data=b"{bad json", headers={"Content-Type": "application/json"}
                ),
            ]
        return [json.loads(body) for status, _, body in results if status == 200]

    as_json, as_text, as_bytes, multipart, urlencoded, bad_json = run(main())
    assert (as_json["type"], as_json["input"], as_json["keys"]) == ("dict", {"a": [1, 2]}, ["body"])
    assert (as_text["type"], as_text["input"]) == ("str", "hello")
    assert as_bytes["type"] == "bytearray"
    # a file part keeps its content type (bytes); a plain field has none (bytes too)
    assert multipart["keys"] == ["data", "note"]
    assert multipart["type"] == "bytearray"
    assert urlencoded["keys"] == ["data", "other"]
    assert urlencoded["input"] == "x y"
    # JSON that does not parse reaches the handler raw, as in TorchServe
    assert (bad_json["type"], bad_json["input"]) == ("bytearray", "{bad json")
    assert as_json["yaml"] == {"greeting": "hi"}


def test_response_carries_handler_status_headers_and_request_id(server: Server) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await _post(
                s,
                server.inference + "/predictions/echo/1.0/extra/path",
                data="teapot",
                headers={"Content-Type": "text/plain", "X-Test": "abc", "x-request-id": "req-42"},
            )
            assert status == 418
            assert headers["X-Custom"] == "yes"
            assert headers["x-request-id"] == "req-42"
            assert headers["Cache-Control"].startswith("no-cache")
            seen = json.loads(body)
            assert seen["request_id"] == "req-42"
            assert seen["x_test"] == "abc"
            assert seen["url_path"] == "extra/path"
            assert seen["explain"] == "False"
            status, headers, body = await _post(s, server.inference + "/explanations/echo", json=1)
            assert status == 200
            assert json.loads(body)["explain"] == "True"
            assert len(headers["x-request-id"]) == 36  # a UUID when the client sent none

    run(main())


def test_outputs_are_serialized_like_torchserve(server: Server) -> None:
    async def main() -> dict[str, tuple[int, CIMultiDict[str], bytes]]:
        async with aiohttp.ClientSession() as s:
            out = {}
            for kind in ("bytes", "str", "tensor", "typed", "json"):
                out[kind] = await _post(
                    s,
                    server.inference + "/predictions/kinds",
                    data=kind,
                    headers={"Content-Type": "text/plain"},
                )
            return out

    out = run(main())
    assert out["bytes"][2] == b"\x00\x01raw"
    assert out["str"][2] == b"plain text"
    assert out["str"][1]["Content-Type"].startswith("text/plain")
    assert out["tensor"][2][:2] == b"PK"  # torch.save writes a zip
    assert out["typed"][1]["Content-Type"] == "application/x-custom"
    assert out["json"][2] == b'{\n  "kind": "json"\n}'  # json.dumps(indent=2), as TorchServe
    assert out["json"][1]["Content-Type"] == "application/json"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server: Server) -> None:
    before = metric_samples(server, "serve_executions_total")

    async def main() -> list[tuple[int, CIMultiDict[str], bytes]]:
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(
                *(
                    _post(
                        s,
                        server.inference + "/predictions/echo",
                        json={"i": i},
                        headers={"X-Test": str(i)},
                    )
                    for i in range(64)
                )
            )

    results = run(main())
    batches = []
    for i, (status, headers, body) in enumerate(results):
        assert status == 200
        seen = json.loads(body)
        assert seen["input"] == {"i": i}
        assert seen["x_test"] == str(i)
        assert seen["request_id"] == headers["x-request-id"]
        batches.append(seen["batch"])
    assert max(batches) > 1, "concurrent requests should have been batched"
    assert max(batches) <= 8, "a batch never exceeds batch_size"
    assert len({h["x-request-id"] for _, h, _ in results}) == 64
    after = metric_samples(server, "serve_executions_total")
    key = (("model_name", "echo"), ("model_version", "1.0"))
    assert after[key] - before.get(key, 0) < 64, "fewer executions than requests"


def test_unknown_model_version_and_path_get_json_404s(server: Server) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, _, body = await _post(s, server.inference + "/predictions/nope", data=b"x")
            assert status == 404
            error = json.loads(body)
            assert (error["code"], error["type"]) == (404, "ModelNotFoundException")
            # the registered models follow (other tests of the session add some)
            assert error["message"].startswith("Model not found: nope (registered: devices, echo")
            status, _, body = await _post(s, server.inference + "/predictions/echo/9.9", data=b"x")
            assert (status, json.loads(body)["type"]) == (404, "ModelVersionNotFoundException")
            async with s.get(server.inference + "/no/such/path") as r:
                assert r.status == 404
                assert (await r.json())["type"] == "ResourceNotFoundException"

    run(main())


def test_malformed_multipart_is_a_400(server: Server) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, _, body = await _post(
                s,
                server.inference + "/predictions/echo",
                data=b"--xx\r\nnot a part",
                headers={"Content-Type": "multipart/form-data; boundary=yy"},
            )
            assert status == 400, body
            error = json.loads(body)
            assert error["code"] == 400
            assert "multipart" in error["message"]

    run(main())


def test_handler_failures_map_to_torchserve_codes_and_the_model_keeps_serving(
    server: Server,
) -> None:
    url = server.inference + "/predictions/failing"

    async def call(command: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            status, _, body = await _post(
                s, url, data=command, headers={"Content-Type": "text/plain"}
            )
            return status, body if status == 200 else json.loads(body)

    expected = {
        "boom": (503, "Prediction failed"),
        "custom": (418, "custom failure"),
        "short": (503, "number of batch response mismatched"),
        "notalist": (503, "Invalid model predict output"),
        "weird": (503, "Unsupported model output data type."),
        "oom": (507, "Out of resources"),
    }
    for command, (code, message) in expected.items():
        status, body = run(call(command))
        assert (status, body["message"], body["code"]) == (code, message, code), command
        assert body["type"] == "InternalServerException"
        assert run(call("fine")) == (200, b"ok")


def test_streaming_handler_answers_in_chunks(server: Server) -> None:
    async def main() -> tuple[list[bytes], dict[str, str]]:
        async with aiohttp.ClientSession() as s:
            async with s.post(server.inference + "/predictions/streaming", data=b"go") as r:
                assert r.status == 200
                chunks = [chunk async for chunk in r.content.iter_any()]
                return chunks, dict(r.headers)

    chunks, headers = run(main())
    assert b"".join(chunks) == b"chunk0;chunk1;chunk2;done"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["ts_stream_next"] == "true"


def test_handler_metrics_reach_prometheus(server: Server) -> None:
    status, _ = http(
        "POST",
        server.inference + "/predictions/kinds",
        b"metrics",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 200
    families = {
        f.name: f
        for f in text_string_to_metric_families(
            http("GET", server.metrics + "/metrics")[1].decode()
        )
    }
    [calls] = families["KindsCalls"].samples
    assert calls.value >= 2
    assert calls.labels["ModelName"] == "kinds"
    assert calls.labels["Level"] == "Model"
    [timed] = families["KindsTime"].samples
    assert (timed.value, timed.labels["Stage"]) == (12.5, "all")
    assert families["KindsSizes"].type == "histogram"
    assert families["ts_inference_requests"].type == "counter"
    latency = families["ts_inference_latency_microseconds"]
    assert {s.labels["model_name"] for s in latency.samples} >= {"kinds"}
    assert all(s.labels["hostname"] for s in latency.samples)


def _families(server: Server, query: str = "") -> dict[str, Any]:
    text = http("GET", server.metrics + "/metrics" + query)[1].decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_torchserve_frontend_and_host_metrics_keep_their_names(server: Server) -> None:
    before = _families(server)
    assert http("POST", server.inference + "/predictions/echo", b"1")[0] == 200
    assert http("POST", server.inference + "/predictions/no-such-model", b"1")[0] == 404
    after = _families(server)

    def count(families: dict[str, Any], name: str) -> float:
        [sample] = families[name].samples
        assert sample.labels == {"Level": "Host", "Hostname": socket.gethostname()}
        assert families[name].type == "counter"
        return float(sample.value)

    assert count(after, "Requests2XX") >= count(before, "Requests2XX") + 1
    assert count(after, "Requests4XX") >= count(before, "Requests4XX") + 1
    assert count(after, "Requests5XX") >= count(before, "Requests5XX")
    [queue_time] = after["QueueTime"].samples
    assert queue_time.value >= 0
    loads = {s.labels["WorkerName"]: s.value for s in after["WorkerLoadTime"].samples}
    assert any(re.fullmatch(r"W-\d+-echo_1\.0", name) for name in loads), loads
    assert all(value >= 0 for value in loads.values())
    predicted = [s for s in after["PredictionTime"].samples if s.labels["ModelName"] == "echo"]
    assert predicted
    assert predicted[0].labels["Level"] == "Model"
    for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization"):
        [sample] = after[name].samples
        assert 0 <= sample.value <= 100, (name, sample.value)
    for name in ("MemoryUsed", "MemoryAvailable", "DiskUsage", "DiskAvailable"):
        [sample] = after[name].samples
        assert sample.value > 0, name
    assert not [name for name in after if name.startswith("GPU")], "no GPU on this machine"

    only = _families(server, "?name[]=QueueTime&name[]=Requests2XX")
    assert set(only) == {"QueueTime", "Requests2XX"}
