"""Schemathesis against the server's own OpenAPI descriptions: no 5xx, and answers as described.

The real server runs as a subprocess as in production, token authorization on, with the model
API enabled and a throwaway model store: `echo` (loaded, served), `echo2` (version 2.0 of echo)
and `spare` (registrable). Each request carries the key its route takes, read from the key file
before each case since fuzzing `/token` renews keys. Every operation is fuzzed, registering,
scaling, traffic splits, key renewal and unregistering included, and the KServe v1 and OIP v2
paths with them; after each case the test puts `echo` back (registered, default version 1.0
with a worker, no split), so what one case breaks on purpose never turns the next one's answer
into a 404 or a 503.

`make test` runs a short, derandomized pass; `make fuzz` runs the same with
FUZZ_EXAMPLES (many more examples per operation, a fresh seed unless FUZZ_SEED is set;
FUZZ_ONLY narrows it to the operations whose label contains that text).
"""

from __future__ import annotations

import json
import os
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import handlers as src
from tests.helpers.clients import http, keys
from tests.helpers.server import HandlerSpec, Server, ServerFactory

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("FUZZ_SEED")
LONG = "FUZZ_EXAMPLES" in os.environ
ONLY = os.environ.get("FUZZ_ONLY", "")  # e.g. "POST /models": only operations whose label has it

# Known names get generated often, so requests reach models rather than 404s; the rest of each
# value is left to the fuzzer. Worker counts stay small: each worker is a thread.
CONFIG = {
    "dictionaries": {
        "models": {"values": ["echo", "spare"]},
        "versions": {"values": ["1.0", "2.0", "all"]},
        "urls": {"values": ["echo", "echo2", "spare"]},
        "workers": {"values": [0, 1, 2]},
    },
    "parameters": {
        "path.model_name": {"dictionary": "models", "probability": 0.8},
        "query.model_name": {"dictionary": "models", "probability": 0.8},
        "path.model_version": {"dictionary": "versions", "probability": 0.7},
        "query.url": {"dictionary": "urls", "probability": 0.8},
        "query.min_worker": {"dictionary": "workers", "probability": 0.9},
        "query.max_worker": {"dictionary": "workers", "probability": 0.9},
        "query.initial_workers": {"dictionary": "workers", "probability": 0.9},
    },
}


# Checks that hold for this API. Left out on purpose: positive_data_acceptance (a schema cannot
# say max_worker >= min_worker), negative_data_rejection (an empty query value means "not
# given", as in TorchServe) and unsupported_method (TorchServe's prediction paths and /ping
# take any method).
def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """not_a_server_error, except where TorchServe's contract answers 5xx to a valid request:
    503 when a version has no worker (scaled to 0, or registered without workers), 504 when a
    model does not answer within its response_timeout (the fuzzer registers versions with
    timeouts down to 1e-300 s) or the X-Request-Timeout deadline passes (1 ms), and 500 for a
    synchronous register whose workers failed to load (here: a `handler` that names no handler).
    The KServe v1 and OIP paths answer the same 503 and 504 as `{"error": message}`."""
    status = response.status_code
    if status in (500, 503, 504):
        body = response.json()
        if (status, body.get("type")) in (
            (503, "ServiceUnavailableException"),
            (504, "RequestTimeoutException"),
            (504, "DeadlineExceededException"),
        ):
            return None
        if status in (503, 504) and set(body) == {"error"}:
            return None
        if (
            case.operation.label == "POST /models"
            and status == 500
            and body["message"].startswith("Failed to start workers")
        ):
            return None
    return not_a_server_error(ctx, response, case)


def _key_left_out(case: Any) -> bool:
    """A negative case that drops the Authorization header on purpose."""
    return bool(case.operation.schema.is_security_param_negated(case))


def authorized(ctx: Any, response: Any, case: Any) -> bool | None:
    """A case without its key gets 401; one with its route's current key never does (a 401
    there would pass as a described answer while testing nothing)."""
    refused = response.status_code == 401
    if _key_left_out(case) and not refused:
        raise AssertionError(f"{case.operation.label} without a key: {response.status_code}")
    if refused and not _key_left_out(case):
        raise AssertionError(f"401 with the key for {case.operation.label}: {response.text}")
    return None


CHECKS = [
    authorized,
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(make_module_server: ServerFactory) -> Server:
    """Token auth and the model API on; the factory checks at the end that no request hit an
    unhandled error."""
    # Known: a fuzzed registration with a huge integer setting makes the snapshot after it fail
    # ("Integer exceeds 64-bit range", logged with its traceback; the change itself stands).
    return make_module_server(
        {
            "echo": src.ECHO,
            "echo2": HandlerSpec(src.ECHO, name="echo", version="2.0"),
            "spare": src.ECHO,
        },
        load=["echo"],
        expect_errors=["Cannot write config snapshot"],
        disable_token_authorization=False,
        enable_model_api=True,
        models={"echo": {"*": {"batch_size": 4, "max_batch_delay": 5}}},
    )


def bearer(server: Server, kind: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys(server)[kind]}"}


def manage(server: Server, method: str, path: str) -> tuple[int, bytes]:
    """A management call with the current management key."""
    return http(method, server.management + path, headers=bearer(server, "management"))


def _schema(document: dict[str, Any], base_url: str) -> Any:
    config = schemathesis.Config.from_dict({**CONFIG, "base-url": base_url})
    if SEED is not None:
        config.update(seed=int(SEED), max_failures=None)
    return schemathesis.openapi.from_dict(document, config=config)


@pytest.fixture(scope="module")
def inference_schema(fuzz_server: Server) -> Any:
    status, body = http("GET", fuzz_server.inference + "/api-description")  # public
    assert status == 200
    return _schema(json.loads(body), fuzz_server.inference)


@pytest.fixture(scope="module")
def management_schema(fuzz_server: Server) -> Any:
    status, body = http("OPTIONS", fuzz_server.management + "/")
    assert status == 200
    return _schema(json.loads(body), fuzz_server.management)


def _restore(server: Server) -> None:
    """Put echo back as the fixture made it: registered, 1.0 the default, one worker, no
    traffic split."""
    status, _ = manage(server, "GET", "/models/echo/1.0")
    if status == 404:
        status, body = manage(server, "POST", "/models?url=echo&initial_workers=1&synchronous=true")
        assert status in (200, 409), body
    status, body = manage(server, "DELETE", "/models/echo/traffic")
    assert status == 200, body
    status, body = manage(server, "PUT", "/models/echo/1.0/set-default")
    assert status == 200, body
    status, body = manage(server, "GET", "/models/echo/1.0")
    if json.loads(body)[0]["minWorkers"] < 1:
        status, body = manage(server, "PUT", "/models/echo/1.0?min_worker=1&synchronous=true")
        assert status == 200, body


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None and not LONG,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _fuzz(
    schema: Any, key: Callable[[str], dict[str, str]], after: Callable[[], None] = lambda: None
) -> None:
    """Every operation, valid and invalid inputs, each with the key `key` gives for its path;
    fails listing each operation that failed."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if ONLY not in operation.label:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                try:
                    headers = {} if _key_left_out(case) else key(case.operation.path)
                    case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)
                finally:
                    after()

            try:
                check()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid
            except (Exception, BaseExceptionGroup) as error:  # reported together, at the end
                detail = "".join(traceback.format_exception(error))[-4000:]
                failures.append(f"{operation.label} ({mode.value}): {error}\n{detail}")
    assert not failures, "\n\n".join(failures)


def test_inference_api_answers_as_described(inference_schema: Any, fuzz_server: Server) -> None:
    _fuzz(inference_schema, lambda path: bearer(fuzz_server, "inference"))


def test_management_api_answers_as_described(management_schema: Any, fuzz_server: Server) -> None:
    def key(path: str) -> dict[str, str]:
        return bearer(fuzz_server, "API" if path == "/token" else "management")

    _fuzz(management_schema, key, after=lambda: _restore(fuzz_server))


def test_descriptions_are_per_port(fuzz_server: Server) -> None:
    _, inference_doc = http("GET", fuzz_server.inference + "/api-description")
    _, management_doc = http("OPTIONS", fuzz_server.management + "/")
    inference_paths = set(json.loads(inference_doc)["paths"])
    management_paths = set(json.loads(management_doc)["paths"])
    assert "/predictions/{model_name}" in inference_paths
    assert "/models/{model_name}" in management_paths
    # KServe v1 readiness is on both ports, as in TorchServe: TorchServe's body on management,
    # KServe's on inference
    assert inference_paths & management_paths == {"/", "/v1/models/{model_name}"}


def test_a_405_names_the_allowed_methods(fuzz_server: Server) -> None:
    request = urllib.request.Request(
        fuzz_server.management + "/models",
        method="PATCH",
        headers=bearer(fuzz_server, "management"),
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "GET, HEAD, POST"
    assert json.loads(refused.value.read())["type"] == "MethodNotAllowedException"


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("PUT", "/models/echo?min_worker=100000", "min_worker must be at most 256"),
        ("PUT", "/models/echo?min_worker=1&max_worker=257", "max_worker must be at most 256"),
        ("POST", "/models?url=spare&initial_workers=9999", "initial_workers must be at most 256"),
        ("POST", "/models?url=spare&response_timeout=inf", "response_timeout must be greater"),
        ("POST", "/models?url=spare&startup_timeout=1e999", "startup_timeout must be greater"),
        ("POST", "/models?url=spare&batch_size=" + "9" * 20, "batch_size must be at most"),
        ("POST", "/models?url=spare&max_batch_delay=2147483648", "max_batch_delay must be at"),
    ],
)
def test_found_by_fuzzing_bad_values_are_400s(
    fuzz_server: Server, method: str, path: str, message: str
) -> None:
    status, body = manage(fuzz_server, method, path)
    assert status == 400, body
    assert message in json.loads(body)["message"]


def test_found_by_fuzzing_a_malformed_multipart_part_is_a_400(fuzz_server: Server) -> None:
    body = b"--b\r\n\xf0\x9d\x95\xbf no header--b--\r\n"
    status, answer = http(
        "POST",
        fuzz_server.inference + "/predictions/echo",
        body,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            **bearer(fuzz_server, "inference"),
        },
    )
    assert status == 400, answer
    assert json.loads(answer)["message"].startswith("Malformed multipart/form-data body")


def test_found_by_fuzzing_huge_timeouts_are_400s_naming_the_range(fuzz_server: Server) -> None:
    # accepted once, they broke the snapshot write; TorchServe reads them as Java ints
    for query in ("response_timeout=1e30", "startup_timeout=1e300"):
        status, body = manage(fuzz_server, "POST", f"/models?url=spare&model_name=huge&{query}")
        assert status == 400, body
        name = query.split("=")[0]
        message = json.loads(body)["message"]
        assert message.startswith(f"Parameter {name} must be greater than 0 and at most 2147483647")
    assert manage(fuzz_server, "GET", "/models/huge")[0] == 404


@pytest.mark.parametrize("datatype", ["FP16", "FP32"])
def test_an_oip_float_out_of_fp16_or_fp32_range_is_a_400(
    fuzz_server: Server, datatype: str
) -> None:
    tensor = {"name": "x", "shape": [1], "datatype": datatype, "data": [1e300]}
    status, body = http(
        "POST",
        fuzz_server.inference + "/v2/models/echo/infer",
        json.dumps({"inputs": [tensor]}).encode(),
        headers={"Content-Type": "application/json", **bearer(fuzz_server, "inference")},
    )
    assert status == 400, body
    assert json.loads(body)["error"].startswith(f"input x: data does not fit datatype {datatype}")
