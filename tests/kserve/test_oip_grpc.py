"""KServe's gRPC inference service (OIP v2) on the gRPC inference port, beside TorchServe's,
driven by `tritonclient.grpc` from PyPI. (The kserve SDK's clients are in test_oip_kserve.py:
the two packages register the same protobuf symbols and cannot share a process.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.helpers import oip_models
from tests.helpers.oip_models import KIND_TENSORS
from tests.helpers.server import Server, ServerFactory


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    return oip_models.start_with(make_module_server)


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_inference) as connected:
        yield connected


def triton_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_triton_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("scale")
    assert client.is_model_ready("ver", "2.0")
    assert client.get_server_metadata(as_json=True)["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("scale", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert client.get_model_metadata("ver", "2.0", as_json=True)["versions"] == ["1.0", "2.0"]


def test_triton_fp32_with_requested_output_and_id(client: triton.InferenceServerClient) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer(
        "scale",
        [triton_input("x", x, "FP32")],
        outputs=[triton.InferRequestedOutput("y")],
        request_id="grpc-1",
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert result.as_numpy("rows") is None  # not requested
    assert result.get_response(as_json=True)["id"] == "grpc-1"


def test_triton_fp16_bool_int64_bytes(client: triton.InferenceServerClient) -> None:
    result = client.infer("kinds", [triton_input(n, a, d) for n, (a, d) in KIND_TENSORS.items()])
    np.testing.assert_array_equal(result.as_numpy("half"), KIND_TENSORS["half"][0] + 1)
    np.testing.assert_array_equal(result.as_numpy("flags"), ~KIND_TENSORS["flags"][0])
    np.testing.assert_array_equal(result.as_numpy("ints"), KIND_TENSORS["ints"][0] * 10)
    assert list(result.as_numpy("words")) == [b"olleh", b"ba"]


def test_triton_versioned_model(client: triton.InferenceServerClient) -> None:
    a = triton_input("a", np.array([1], np.int32), "INT32")
    for version in ("1.0", "2.0"):
        result = client.infer("ver", [a], model_version=version)
        assert result.get_response(as_json=True)["model_version"] == version
        assert result.as_numpy("a").tolist() == [float(version)]


def test_triton_torchserve_handler_as_the_kservev2_envelope(
    client: triton.InferenceServerClient,
) -> None:
    a = triton_input("a", np.array([[1, 2], [3, 4]], np.int32), "INT32")
    result = client.infer("sums", [a])
    assert result.as_numpy("a").tolist() == [10]


def test_triton_dict_answers_are_json_text(client: triton.InferenceServerClient) -> None:
    # gRPC carries BYTES as bytes: a dict answer (REST: the JSON object) is its JSON text
    img = triton_input("img", np.array([b"aGk="], dtype=np.object_), "BYTES")
    result = client.infer("echo", [img])
    output = result.get_output("img")
    assert (output.datatype, list(output.shape)) == ("BYTES", [1])
    (answer,) = result.as_numpy("img").tolist()
    assert json.loads(answer) == {
        "keys": ["data", "datatype", "name", "shape"],
        "shape": [1],
        "type": "str",
        "data": "aGk=",
    }


def test_triton_a_request_the_handler_fails_is_invalid_argument(
    client: triton.InferenceServerClient,
) -> None:
    img = triton_input("img", np.array([b"fail"], dtype=np.object_), "BYTES")
    with pytest.raises(InferenceServerException) as caught:
        client.infer("echo", [img])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message() == "fail was sent"


@pytest.mark.parametrize(
    ("model", "version", "name", "array", "datatype", "code", "words"),
    [
        ("nope", "", "x", np.zeros((1, 4), np.float32), "FP32", "NOT_FOUND", "nope"),
        ("ver", "9.9", "a", np.zeros((1,), np.int32), "INT32", "NOT_FOUND", "9.9"),
        ("scale", "", "x", np.zeros((1, 3), np.float32), "FP32", "INVALID_ARGUMENT", "input x"),
        ("scale", "", "x", np.zeros((1, 4), np.float64), "FP64", "INVALID_ARGUMENT", "input x"),
        ("scale", "", "x", np.zeros((5000, 4), np.float32), "FP32", "RESOURCE_EXHAUSTED", "max"),
    ],
)
def test_triton_errors(
    client: triton.InferenceServerClient,
    model: str,
    version: str,
    name: str,
    array: np.ndarray,
    datatype: str,
    code: str,
    words: str,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [triton_input(name, array, datatype)], model_version=version)
    assert caught.value.status() == f"StatusCode.{code}"
    assert words in caught.value.message()
