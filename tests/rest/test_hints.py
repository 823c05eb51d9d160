"""A wrong name gets an answer that says where the server looked and what is there.

Archive names on register (REST, gRPC, load_models at start), unknown models on inference and
management, and management paths sent to the inference port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml

from tests.helpers import handlers as src
from tests.helpers.clients import http
from tests.helpers.grpc_stubs import grpcio_stubs
from tests.helpers.server import Server, ServerFactory, model_folder, run_serve, server_config


def call(method: str, url: str) -> tuple[int, Any]:
    status, raw = http(method, url)
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def hints(make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A server with the model API on, nothing registered, and three archives in its store."""
    root = tmp_path_factory.mktemp("hints")
    store = root / "store"
    model_folder(store, "digits", src.ECHO)
    model_folder(store, "digits_v2", src.ECHO, name="digits", version="2.0")
    (store / "mnist.mar").write_bytes(b"listed by name; never opened here")
    (store / "notes.txt").write_text("not an archive")
    return make_module_server(root=root, store=store, enable_model_api=True)


@pytest.fixture(scope="module")
def manage(hints: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pb: dict[str, ModuleType] = grpcio_stubs(tmp_path_factory.mktemp("stubs"))
    with grpc.insecure_channel(hints.grpc_management) as channel:
        yield pb["management_pb2_grpc"].ManagementAPIsServiceStub(channel), pb["management_pb2"]


@pytest.fixture
def registered(hints: Server) -> Iterator[None]:
    """`digits` 1.0 registered for the test, unregistered after it."""
    status, body = call("POST", f"{hints.management}/models?url=digits&initial_workers=1")
    assert status == 200, body
    yield
    assert call("DELETE", f"{hints.management}/models/digits")[0] == 200


def store_of(server: Server) -> str:
    return str(server.config["model_store"])


def test_unknown_model_says_none_is_registered(hints: Server) -> None:
    status, body = call("POST", f"{hints.inference}/predictions/digits")
    assert (status, body) == (
        404,
        {
            "code": 404,
            "type": "ModelNotFoundException",
            "message": "Model not found: digits (no model is registered)",
        },
    )


@pytest.mark.usefixtures("registered")
def test_unknown_model_lists_the_registered_ones(hints: Server) -> None:
    expected = "Model not found: digit; did you mean 'digits'? (registered: digits)"
    for method, url in [
        ("POST", f"{hints.inference}/predictions/digit"),
        ("GET", f"{hints.management}/models/digit"),
        ("PUT", f"{hints.management}/models/digit?min_worker=2"),
    ]:
        status, body = call(method, url)
        assert (status, body["type"], body["message"]) == (404, "ModelNotFoundException", expected)
    status, body = call("POST", f"{hints.inference}/predictions/zzz")
    assert (status, body["message"]) == (404, "Model not found: zzz (registered: digits)")


def test_rest_register_names_the_store_and_the_closest_archives(hints: Server) -> None:
    status, body = call("POST", f"{hints.management}/models?url=digit")
    assert (status, body["type"]) == (404, "ModelNotFoundException")
    assert body["message"] == (
        f"Model not found at: digit (looked in the model store {store_of(hints)}); "
        "did you mean 'digits' or 'digits_v2'?"
    )
    status, body = call("POST", f"{hints.management}/models?url=resnet.mar")
    assert status == 404
    assert body["message"] == (
        f"Model not found at: resnet.mar (looked in the model store {store_of(hints)}, "
        "which holds digits, digits_v2, mnist.mar)"
    )


def test_grpc_register_names_the_store_and_the_closest_archives(
    hints: Server, manage: tuple[Any, Any]
) -> None:
    stub, m = manage
    with pytest.raises(grpc.RpcError) as info:
        stub.RegisterModel(m.RegisterModelRequest(url="mnist"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == (
        f"Model not found at: mnist (looked in the model store {store_of(hints)}); "
        "did you mean 'mnist.mar'?"
    )


def test_management_paths_on_the_inference_port_name_the_management_address(
    hints: Server,
) -> None:
    where = hints.config["management_address"]
    for method, path in [("GET", "/models"), ("POST", "/models?url=digits"), ("GET", "/models/x")]:
        status, body = call(method, hints.inference + path)
        assert (status, body["type"]) == (404, "ResourceNotFoundException")
        shown = path.partition("?")[0]
        assert body["message"] == (
            f"{method} {shown} is a management API path: the management API is on {where}; "
            "this is the inference API"
        )
    # other unknown paths keep TorchServe's message
    status, body = call("GET", hints.inference + "/no/such/path")
    assert (status, body["message"]) == (
        404,
        "Requested resource is not found, please refer to API document.",
    )


def test_a_load_models_typo_at_start_suggests_the_archive(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model_folder(store, "digits", src.ECHO)
    config = server_config(store, load_models=["digit"])
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    result = run_serve("--config", str(tmp_path / "serve.yaml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"load_models[0]: digit is not in the model store {store}" in result.stderr
    assert "did you mean 'digits'?" in result.stderr
