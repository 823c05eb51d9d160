"""TorchServe's other inference paths: SageMaker's /invocations and /models/{m}/invoke, and the
legacy /{model}[/{version}]/predict. On these (and not on /predictions) query parameters reach
the handler as inputs, ahead of the body."""

from __future__ import annotations

import pytest

from tests.helpers import handlers as src
from tests.helpers.clients import call_json, http
from tests.helpers.server import HandlerSpec, Server, ServerFactory

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def single(make_module_server: ServerFactory) -> Server:
    """A server with one model loaded at startup (and room to register another)."""
    server = make_module_server(
        {"params": src.PARAMS, "later": HandlerSpec(src.PARAMS, name="later")},
        load=["params"],
        enable_model_api=True,
    )
    status, body = http(
        "POST", f"{server.management}/models?url=later&initial_workers=1&synchronous=true"
    )
    assert status == 200, body
    return server


def _post(url: str, body: bytes = b'{"x": 1}') -> tuple[int, object]:
    return call_json("POST", url, body, headers=JSON)


def test_invocations_without_a_name_use_the_one_startup_model(single: Server) -> None:
    status, rows = _post(f"{single.inference}/invocations?a=1&b=two&a=3")
    assert status == 200
    # a repeated name keeps its first place and its last value, as in TorchServe's backend
    assert rows == [["a", "3"], ["b", "two"], ["body", {"x": 1}]]


def test_invocations_name_the_model_in_the_query_or_the_path(single: Server) -> None:
    status, rows = _post(f"{single.inference}/invocations?model_name=later")
    assert (status, rows) == (200, [["model_name", "later"], ["body", {"x": 1}]])
    status, rows = _post(f"{single.inference}/models/later/invoke?k=v")
    assert (status, rows) == (200, [["k", "v"], ["body", {"x": 1}]])
    status, error = _post(f"{single.inference}/invocations?model_name=nope")
    assert status == 404
    assert error == {
        "code": 404,
        "type": "ModelNotFoundException",
        "message": "Model not found: nope (registered: later, params)",
    }


def test_legacy_predict_paths_pass_the_query_and_predictions_do_not(single: Server) -> None:
    for path in ("params/predict", "params/1.0/predict"):
        status, rows = _post(f"{single.inference}/{path}?q=1")
        assert (status, rows) == (200, [["q", "1"], ["body", {"x": 1}]]), path
    status, rows = _post(f"{single.inference}/predictions/params?q=1")
    assert (status, rows) == (200, [["body", {"x": 1}]])
    status, error = _post(f"{single.inference}/params/9.9/predict")
    assert status == 404
    assert error["type"] == "ModelVersionNotFoundException"  # type: ignore[index]


def test_invocations_need_a_name_when_several_models_loaded_at_startup(server: Server) -> None:
    status, error = _post(f"{server.inference}/invocations")
    assert status == 400
    assert error == {
        "code": 400,
        "type": "BadRequestException",
        "message": "Parameter model_name is required.",
    }
    status, rows = _post(f"{server.inference}/invocations?model_name=echo")
    assert status == 200
    assert rows["keys"] == ["body", "model_name"]  # type: ignore[index]
