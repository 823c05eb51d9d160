"""The bundled digits model end to end: trained and archived as `make run` does, then served
over TorchServe's REST API, KServe v1 and the Open Inference Protocol (REST and gRPC), input
errors answered as each protocol answers errors.

Also: every --archive-format of our archiver, and the real torch-model-archiver's .mar of the
same files, load and serve in our server.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from serve.config import load_config
from tests.helpers.clients import concurrently, request
from tests.helpers.server import REPO, Server, serving

EXAMPLE = REPO / "examples" / "digits"
FORMATS = {
    "digits": ("default", "digits.mar"),
    "digits_store": ("zip-store", "digits_store.mar"),
    "digits_tgz": ("tgz", "digits_tgz.tar.gz"),
    "digits_dir": ("no-archive", "digits_dir"),
}


def train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_train", EXAMPLE / "train.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def archiver_args(name: str, weights: Path, store: Path) -> list[str]:
    return [
        "--model-name", name, "--version", "1.0",
        "--model-file", str(EXAMPLE / "model.py"), "--serialized-file", str(weights),
        "--handler", "image_classifier",
        "--extra-files", str(EXAMPLE / "index_to_name.json"),
        "--config-file", str(EXAMPLE / "model-config.yaml"), "--export-path", str(store),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("digits")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--out-dir", str(root / "weights")],
        check=True,
        env=env,
    )
    weights = root / "weights" / "digits.pt"
    store = root / "store"
    store.mkdir()
    for name, (archive_format, _) in FORMATS.items():
        args = [*archiver_args(name, weights, store), "--archive-format", archive_format]
        subprocess.run([sys.executable, "-m", "serve.archiver", *args], check=True, env=env)
    real = archiver_args("digits_real", weights, store)
    subprocess.run([sys.executable, "-m", "model_archiver.model_packaging", *real], check=True)
    archives = [file for _, file in FORMATS.values()] + ["digits_real.mar"]
    with serving(root, store=store, load=archives) as running:
        yield running


@pytest.mark.parametrize("model", [*FORMATS, "digits_real"])
def test_every_archive_format_serves(server: Server, model: str) -> None:
    sample = (EXAMPLE / "sample_7.png").read_bytes()
    reply = request("POST", f"{server.inference}/predictions/{model}", data=sample)
    assert reply.status == 200, reply.body
    assert next(iter(reply.body)) == "7"  # most likely first
    assert len(reply.body) == 3  # model-config.yaml: handler.topk 3


def test_held_out_digits_are_classified(server: Server) -> None:
    train = train_module()
    split = train.load_split()
    pngs = [train.png(image) for image in split.held_out_images]
    assert len(pngs) == 300
    replies = concurrently(
        f"{server.inference}/predictions/digits",
        [{"data": png, "headers": {"Content-Type": "image/png"}} for png in pngs],
        limit=32,
    )
    assert all(r.status == 200 for r in replies)
    predicted = [max(r.body, key=r.body.get) for r in replies]
    expected = [str(label) for label in split.held_out_labels.tolist()]
    correct = sum(p == e for p, e in zip(predicted, expected, strict=True))
    assert correct / len(expected) >= 0.95, f"{correct} of {len(expected)} correct"


def test_sample_image_is_a_held_out_seven() -> None:
    train = train_module()
    split = train.load_split()
    held_out = zip(split.held_out_images, split.held_out_labels, strict=True)
    sevens = [image for image, label in held_out if label == 7]
    assert (EXAMPLE / "sample_7.png").read_bytes() == train.png(sevens[0])
    train_pngs = {train.png(image) for image in split.train_images}
    assert train.png(sevens[0]) not in train_pngs


def test_repo_serve_yaml_loads_the_bundled_model() -> None:
    config = load_config(REPO / "serve.yaml")
    assert config.load_models == ("digits.mar",)
    assert config.model_store == REPO / "model_store"
    ports = [
        config.inference_address.port,
        config.management_address.port,
        config.metrics_address.port,
    ]
    assert ports == [8080, 8081, 8082]


def sample_b64() -> str:
    return base64.b64encode((EXAMPLE / "sample_7.png").read_bytes()).decode()


def test_digits_over_kserve_v1_with_base64(server: Server) -> None:
    body = {"instances": [{"data": sample_b64()}]}
    reply = request("POST", f"{server.inference}/v1/models/digits:predict", json=body)
    assert reply.status == 200, reply.body
    (top3,) = reply.body["predictions"]
    assert next(iter(top3)) == "7"
    assert len(top3) == 3


def test_digits_over_oip_rest_with_a_bytes_input(server: Server) -> None:
    body = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [sample_b64()]}]
    }
    reply = request("POST", f"{server.inference}/v2/models/digits/infer", json=body)
    assert reply.status == 200, reply.body
    (output,) = reply.body["outputs"]
    # TorchServe 0.12's kservev2 envelope: named after the input, the top-k dict flattened
    # into a BYTES tensor of shape [1] whose one element is the dict itself
    assert (output["name"], output["datatype"], output["shape"]) == ("image", "BYTES", [1])
    (top3,) = output["data"]
    assert next(iter(top3)) == "7"
    assert len(top3) == 3


def test_digits_over_oip_grpc_with_raw_png_bytes(server: Server) -> None:
    png = (EXAMPLE / "sample_7.png").read_bytes()
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([png], dtype=np.object_))
    with triton.InferenceServerClient(server.grpc_inference) as client:
        result = client.infer("digits", [image])
        (answer,) = result.as_numpy("image").tolist()
        top3 = json.loads(answer)
        assert next(iter(top3)) == "7"
        assert len(top3) == 3
        not_an_image = triton.InferInput("image", [1], "BYTES")
        not_an_image.set_data_from_numpy(np.array([b"\xff\x00 not a png"], dtype=np.object_))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("digits", [not_an_image])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message() == (
        "Bad input: not a decodable image (no image format Pillow knows)"
    )


def test_a_bad_image_over_oip_rest_is_a_400_with_the_reason(server: Server) -> None:
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}
    reply = request("POST", f"{server.inference}/v2/models/digits/infer", json=body)
    assert reply.status == 400
    assert list(reply.body) == ["error"]
    assert reply.body["error"].startswith("Bad input: the string is not valid base64")


def test_a_bad_image_over_kserve_v1_is_one_json_error(server: Server) -> None:
    body = {"instances": [{"data": "%%%"}]}
    reply = request("POST", f"{server.inference}/v1/models/digits:predict", json=body)
    assert reply.status == 400
    assert list(reply.body) == ["error"]
    assert reply.body["error"].startswith("Bad input: the string is not valid base64")


def test_a_png_posted_to_kserve_v1_says_to_send_json_instances(server: Server) -> None:
    png = (EXAMPLE / "sample_7.png").read_bytes()
    reply = request("POST", f"{server.inference}/v1/models/digits:predict", data=png)
    assert reply.status == 400
    message = reply.body["error"]
    assert "must be JSON" in message
    assert '{"instances": [{"data": "<base64 of the file>"}]}' in message
    assert "surrogates" not in message


def test_a_wrong_form_field_says_what_arrived_and_how_to_send(server: Server) -> None:
    form = aiohttp.FormData()
    form.add_field("file", (EXAMPLE / "sample_7.png").read_bytes(), filename="x.png")
    reply = request("POST", f"{server.inference}/predictions/digits", data=form)
    assert reply.status == 400
    message = reply.body["message"]
    assert "batch" not in message
    assert message.startswith(
        "Bad input: no 'data' or 'body' input: the request (multipart/form-data) has the "
        "field(s) 'file'; send the image as the request body (curl -T file.png URL) or as "
        "the form field data (curl -F data=@file.png URL)"
    )
