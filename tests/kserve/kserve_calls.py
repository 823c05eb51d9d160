"""Calls a running server with the kserve SDK's REST and gRPC clients; prints a JSON report.

Run in its own process by tests/kserve/test_oip_kserve.py: the kserve SDK and tritonclient.grpc both
register the `inference.*` protobuf symbols, so they cannot be imported by one process.
Usage: python -m tests.kserve_calls HTTP_URL GRPC_ADDRESS
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import RequestedOutput

from tests.helpers.oip_models import KIND_TENSORS


def kinds_inputs(binary: bool) -> list[InferInput]:
    inputs = []
    for name, (array, datatype) in KIND_TENSORS.items():
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary or datatype == "FP16")
        inputs.append(tensor)
    return inputs


def outputs(response: Any) -> dict[str, Any]:
    return {o.name: o.as_numpy().tolist() for o in response.outputs}


def failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, httpx.HTTPStatusError):
        return {"status": exc.response.status_code, "message": str(exc)}
    if isinstance(exc, grpc.aio.AioRpcError | grpc.RpcError):
        return {"code": exc.code().name, "message": exc.details()}
    return {"type": type(exc).__name__, "message": str(exc)}


async def rest_calls(url: str) -> dict[str, Any]:
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    x = InferInput("x", [1, 4], "FP32", data=[1.0, 2.0, 3.0, 4.0])
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "live": lambda: v2.is_server_live(url),
        "ready": lambda: v2.is_server_ready(url),
        "model_ready": lambda: v2.is_model_ready(url, "kinds"),
        "model_not_ready": lambda: v2.is_model_ready(url, "nope"),
        "json": lambda: v2.infer(url, InferRequest("kinds", kinds_inputs(False), "r-1"), "kinds"),
        "binary": lambda: v2.infer(url, InferRequest("kinds", kinds_inputs(True), "r-2"), "kinds"),
        "requested": lambda: v2.infer(
            url, InferRequest("scale", [x], request_outputs=[RequestedOutput("y")]), "scale"
        ),
        "unknown_model": lambda: v2.infer(url, InferRequest("nope", [x]), "nope"),
        "wrong_shape": lambda: v2.infer(
            url, InferRequest("scale", [InferInput("x", [2, 2], "FP32", data=[1.0] * 4)]), "scale"
        ),
        "wrong_datatype": lambda: v2.infer(
            url, InferRequest("scale", [InferInput("x", [1, 4], "INT32", data=[1] * 4)]), "scale"
        ),
        "too_large": lambda: v2.infer(
            url,
            InferRequest("scale", [InferInput("x", [5000, 4], "FP32", data=[0.5] * 20000)]),
            "scale",
        ),
        "v1_predict": lambda: v1.infer(url, {"instances": [[1, 2], [3]]}, model_name="sums"),
        "v1_ready": lambda: v1.is_model_ready(url, "sums"),
        "v1_unknown": lambda: v1.infer(url, {"instances": [1]}, model_name="nope"),
    }
    report: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            result = await call()
            report[name] = {"ok": outputs(result) if hasattr(result, "outputs") else result}
            if hasattr(result, "id"):
                report[name]["id"] = result.id
        except Exception as exc:
            report[name] = {"error": failure(exc)}
    await v2.close()
    await v1.close()
    return report


async def grpc_calls(address: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with InferenceGRPCClient(address, retries=0) as client:
        x = InferInput("x", [1, 4], "FP32", data=[1.0, 2.0, 3.0, 4.0])
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "live": client.is_server_live,
            "ready": client.is_server_ready,
            "model_ready": lambda: client.is_model_ready("kinds"),
            "raw": lambda: client.infer(InferRequest("kinds", kinds_inputs(True), "g-1")),
            "typed": lambda: client.infer(
                InferRequest("scale", [x], request_outputs=[RequestedOutput("rows")])
            ),
            "versioned": lambda: client.infer(
                InferRequest("ver", [InferInput("a", [1], "INT32", data=[1])], model_version="2.0")
            ),
            "unknown_model": lambda: client.infer(InferRequest("nope", [x])),
            "unknown_version": lambda: client.infer(
                InferRequest("ver", [InferInput("a", [1], "INT32", data=[1])], model_version="9")
            ),
            "wrong_datatype": lambda: client.infer(
                InferRequest("scale", [InferInput("x", [1, 4], "INT64", data=[1, 2, 3, 4])])
            ),
            "too_large": lambda: client.infer(
                InferRequest("scale", [InferInput("x", [5000, 4], "FP32", data=[0.5] * 20000)])
            ),
        }
        for name, call in calls.items():
            try:
                result = await call()
                report[name] = {"ok": outputs(result) if hasattr(result, "outputs") else result}
                if hasattr(result, "model_version"):
                    report[name]["version"] = result.model_version
                if hasattr(result, "id"):
                    report[name]["id"] = result.id
            except Exception as exc:
                report[name] = {"error": failure(exc)}
    with grpc.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="kinds"))
        report["metadata"] = {
            "server": stub.ServerMetadata(pb.ServerMetadataRequest()).name,
            "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs],
        }
    return report


def main() -> None:
    url, address = sys.argv[1], sys.argv[2]
    report = {"rest": asyncio.run(rest_calls(url)), "grpc": asyncio.run(grpc_calls(address))}
    print(json.dumps(report, default=lambda b: b.decode("utf-8", errors="replace")))


if __name__ == "__main__":
    main()
