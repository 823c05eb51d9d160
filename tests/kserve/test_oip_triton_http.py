"""The Open Inference Protocol over REST, driven by `tritonclient.http` from PyPI: health,
metadata, JSON and binary tensors of every kind the tests use, a versioned model, requested
outputs, and errors raised as InferenceServerException with the server's message."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers import oip_models
from tests.helpers.oip_models import KIND_TENSORS
from tests.helpers.server import Server, ServerFactory


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Server:
    return oip_models.start_with(make_module_server)


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    connected = triton.InferenceServerClient(server.inference.removeprefix("http://"))
    yield connected
    connected.close()


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    made = triton.InferInput(name, list(array.shape), datatype)
    made.set_data_from_numpy(array, binary_data=binary)
    return made


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("kinds")
    assert client.is_model_ready("ver", "1.0")
    assert not client.is_model_ready("ver", "9.9")
    assert client.get_server_metadata()["name"] == "serve"
    meta = client.get_model_metadata("kinds")
    assert meta["outputs"][3] == {"name": "words", "datatype": "BYTES", "shape": [-1]}
    assert client.get_model_metadata("ver", "2.0")["versions"] == ["1.0", "2.0"]


@pytest.mark.parametrize("binary", [False, True])
def test_every_kind_json_or_binary(client: triton.InferenceServerClient, binary: bool) -> None:
    # FP16 has no JSON form in tritonclient: it always goes binary
    inputs = [tensor(n, a, d, binary or d == "FP16") for n, (a, d) in KIND_TENSORS.items()]
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in KIND_TENSORS]
    result = client.infer("kinds", inputs, outputs=outputs, request_id="h-1")
    assert result.get_response()["id"] == "h-1"
    np.testing.assert_array_equal(result.as_numpy("half"), KIND_TENSORS["half"][0] + 1)
    np.testing.assert_array_equal(result.as_numpy("flags"), ~KIND_TENSORS["flags"][0])
    np.testing.assert_array_equal(result.as_numpy("ints"), KIND_TENSORS["ints"][0] * 10)
    words = [w if isinstance(w, bytes) else w.encode() for w in result.as_numpy("words")]
    assert words == [b"olleh", b"ba"]


def test_fp32_binary_with_one_requested_output(client: triton.InferenceServerClient) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = client.infer(
        "scale",
        [tensor("x", x, "FP32", True)],
        outputs=[triton.InferRequestedOutput("y", binary_data=True)],
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert result.as_numpy("rows") is None


def test_versioned_model(client: triton.InferenceServerClient) -> None:
    a = tensor("a", np.array([1], np.int32), "INT32", False)
    for version in ("1.0", "2.0"):
        result = client.infer("ver", [a], model_version=version)
        assert result.get_response()["model_version"] == version
        assert result.as_numpy("a").tolist() == [float(version)]


@pytest.mark.parametrize(
    ("model", "version", "array", "datatype", "status", "words"),
    [
        ("nope", "", np.zeros((1, 4), np.float32), "FP32", "404", "Model not found: nope"),
        ("ver", "9.9", np.zeros((1, 4), np.float32), "FP32", "404", "9.9"),
        ("scale", "", np.zeros((1, 3), np.float32), "FP32", "400", "input x: shape [1, 3]"),
        ("scale", "", np.zeros((1, 4), np.int64), "INT64", "400", "input x: datatype INT64"),
        ("scale", "", np.zeros((5000, 4), np.float32), "FP32", "413", "max_request_size"),
    ],
)
def test_errors(
    client: triton.InferenceServerClient,
    model: str,
    version: str,
    array: np.ndarray,
    datatype: str,
    status: str,
    words: str,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor("x", array, datatype, True)], model_version=version)
    assert caught.value.status() == status
    assert words in caught.value.message()
