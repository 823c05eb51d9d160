"""Token authorization through the real server: REST and gRPC, every API, every wrong key.

Keys are read from the server's key_file.json (TorchServe 0.12's file), as a user reads them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml

from tests.helpers import handlers as src
from tests.helpers.clients import keys, wait_until
from tests.helpers.grpc_stubs import failed_call, grpcio_stubs
from tests.helpers.server import REPO, Server, ServerFactory, finish, model_folder, server_config

KEY_FILE = "key_file.json"
KEY = re.compile(r"^[A-Za-z0-9_-]{8}$")
WRONG = "Bearer AAAAAAAA"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def call(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, JSON body or bytes, response headers) of one real HTTP request."""
    import urllib.error
    import urllib.request

    body = b"hello" if method in ("POST", "PUT") else None
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, found = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, found = error.code, error.read(), error.headers
    try:
        return status, json.loads(raw), found
    except ValueError:
        return status, raw, found


def assert_refused(method: str, url: str, headers: dict[str, str] | None, key: str) -> None:
    status, body, found = call(method, url, headers)
    assert status == 401, (method, url, headers, body)
    assert found["WWW-Authenticate"] == "Bearer"
    assert found["Content-Type"].startswith("application/json")
    assert body["code"] == 401
    assert body["type"] == "InvalidKeyException"
    assert f"takes the {key} key" in body["message"]


def _start(make: ServerFactory, root: Path, *args: str, **config: Any) -> Server:
    """A server in `root` (where its key file goes) with `echo` loaded."""
    return make({"echo": src.ECHO}, root=root, args=args, **config)


SEEN: set[str] = set()  # every key a test saw: none may appear in the server log


@pytest.fixture(scope="module")
def server(
    make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Token auth on (as by default), the model API on, `echo` loaded."""
    server = _start(
        make_module_server,
        tmp_path_factory.mktemp("auth"),
        disable_token_authorization=False,
        enable_model_api=True,
    )
    SEEN.update(keys(server).values())
    yield server
    finish(server)
    log = server.log()
    SEEN.update(keys(server).values())
    assert SEEN
    assert not [key for key in SEEN if key in log], "a key was written to the log"


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    return grpcio_stubs(tmp_path_factory.mktemp("stubs"))


# --- the key file -------------------------------------------------------------------------


def test_key_file_is_written_0600_in_torchserve_shape(server: Server) -> None:
    path = server.root / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"management", "inference", "API"}
    assert set(data["API"]) == {"key"}
    now = datetime.now(UTC)
    for kind in ("management", "inference"):
        assert set(data[kind]) == {"key", "expiration time"}
        expires = datetime.fromisoformat(data[kind]["expiration time"])
        assert data[kind]["expiration time"].endswith("Z")
        # token_expiration_min defaults to 60
        assert 55 * 60 < (expires - now).total_seconds() <= 60 * 60
    values = [data[kind]["key"] for kind in data]
    assert all(KEY.match(value) for value in values)
    assert len(set(values)) == 3
    log = server.log()
    assert "Token authorization is on" in log
    assert str(path) in log


# --- REST ---------------------------------------------------------------------------------

INFERENCE_CALLS = [
    ("POST", "/predictions/echo"),
    ("POST", "/predictions/echo/1.0"),
    ("POST", "/explanations/echo"),
    ("POST", "/invocations?model_name=echo"),
    ("POST", "/models/echo/invoke"),
    ("POST", "/echo/predict"),
    ("GET", "/no/such/path"),  # a path no route serves needs the key too: nothing to probe
]
MANAGEMENT_CALLS = [
    ("GET", "/models"),
    ("GET", "/models/echo"),
    ("GET", "/models/echo/all"),
    ("PUT", "/models/echo?min_worker=1&synchronous=true"),
    ("PUT", "/models/echo/1.0/set-default"),
    ("POST", "/models?url=nothere.mar"),
    ("DELETE", "/models/nothere"),
    ("GET", "/v1/models/echo"),
    ("GET", "/no/such/path"),
]


def test_inference_api_takes_only_the_inference_key(server: Server) -> None:
    current = keys(server)
    for method, path in INFERENCE_CALLS:
        url = server.inference + path
        for headers in (
            None,
            {"Authorization": WRONG},
            {"Authorization": current["inference"]},  # no scheme
            {"Authorization": "Basic " + current["inference"]},
            bearer(current["management"]),
            bearer(current["API"]),
        ):
            assert_refused(method, url, headers, "inference")
        status, body, _ = call(method, url, bearer(current["inference"]))
        assert status == (404 if "no/such" in path else 200), (path, body)


def test_management_api_takes_only_the_management_key(server: Server) -> None:
    current = keys(server)
    for method, path in MANAGEMENT_CALLS:
        url = server.management + path
        for headers in (
            None,
            {"Authorization": WRONG},
            bearer(current["inference"]),
            bearer(current["API"]),
        ):
            assert_refused(method, url, headers, "management")
        status, body, _ = call(method, url, bearer(current["management"]))
        assert status not in (401, 500), (path, body)
    status, _, _ = call("GET", server.management + "/models", bearer(current["management"]))
    assert status == 200


def test_bearer_scheme_and_spacing_as_torchserve_accepts_them(server: Server) -> None:
    key = keys(server)["inference"]
    url = server.inference + "/predictions/echo"
    for value in (f"Bearer {key}", f"Bearer   {key}", f"bearer {key}", f"Bearer\t{key}"):
        status, _, _ = call("POST", url, {"Authorization": value})
        assert status == 200, value
    for value in (f"Bearer {key}x", f"Bearer {key[:-1]}", f"Bearer {key} extra", "Bearer"):
        assert_refused("POST", url, {"Authorization": value}, "inference")


def test_probes_description_and_metrics_need_no_key(server: Server) -> None:
    for method, url in (
        ("GET", server.inference + "/ping"),
        ("POST", server.inference + "/ping"),
        ("GET", server.inference + "/ready"),
        ("GET", server.inference + "/ready/echo"),
        ("GET", server.inference + "/ready/echo/1.0"),
        ("OPTIONS", server.inference + "/"),
        ("GET", server.inference + "/api-description"),
        ("OPTIONS", server.management + "/"),
        ("GET", server.metrics + "/metrics"),
    ):
        status, _, _ = call(method, url)
        assert status == 200, (method, url)


def test_openapi_declares_the_bearer_scheme_401s_and_token(server: Server) -> None:
    _, doc, _ = call("GET", server.inference + "/api-description")
    _, management_doc, _ = call("OPTIONS", server.management + "/")
    for one in (doc, management_doc):
        assert one["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
        }
        assert one["security"] == [{"bearer": []}]
    assert "401" in doc["paths"]["/predictions/{model_name}"]["post"]["responses"]
    assert "401" in doc["paths"]["/v2/models/{model_name}/infer"]["post"]["responses"]
    assert "401" in management_doc["paths"]["/models"]["get"]["responses"]
    assert doc["paths"]["/ping"]["get"]["security"] == []
    assert management_doc["paths"]["/"]["options"]["security"] == []
    token = management_doc["paths"]["/token"]["get"]
    assert {p["name"] for p in token["parameters"]} == {"type"}
    assert {"200", "400", "401"} <= set(token["responses"])


# --- renewal ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["inference", "management"])
def test_token_renews_a_key_and_refuses_the_old_one_at_once(server: Server, kind: str) -> None:
    old = keys(server)
    url = server.management + f"/token?type={kind}"
    for headers in (None, bearer(old["management"]), bearer(old["inference"])):
        assert_refused("GET", url, headers, "API")
    status, body, _ = call("GET", url, bearer(old["API"]))
    assert status == 200, body
    assert old[kind] not in json.dumps(body)  # the key is in the file only
    new = keys(server)
    SEEN.update(new.values())
    assert new[kind] != old[kind]
    assert KEY.match(new[kind])
    other = "management" if kind == "inference" else "inference"
    assert (new[other], new["API"]) == (old[other], old["API"])
    assert stat.S_IMODE((server.root / KEY_FILE).stat().st_mode) == 0o600
    api = server.inference + "/predictions/echo" if kind == "inference" else server.management
    probe = ("POST", api) if kind == "inference" else ("GET", api + "/models")
    assert_refused(*probe, bearer(old[kind]), kind)
    status, _, _ = call(*probe, bearer(new[kind]))
    assert status == 200
    assert not list(server.root.glob(".key_file.*"))  # no temporary file left behind


def test_token_needs_a_valid_type(server: Server) -> None:
    api = bearer(keys(server)["API"])
    for query, fragment in (("", "type is required"), ("?type=API", "'API'"), ("?type=x", "'x'")):
        status, body, _ = call("GET", server.management + "/token" + query, api)
        assert status == 400, query
        assert body["type"] == "BadRequestException"
        assert fragment in body["message"]


# --- gRPC ---------------------------------------------------------------------------------


def _code(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    failed = failed_call(info.value)
    return failed.code(), failed.details()


def _meta(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def test_grpc_inference_takes_only_the_inference_key(server: Server, pb: Any) -> None:
    current = keys(server)
    i = pb["inference_pb2"]
    request = i.PredictionsRequest(model_name="echo", input={"body": b"x"})
    with grpc.insecure_channel(server.grpc_inference) as channel:
        stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
        for metadata in (
            (),
            (("authorization", WRONG),),
            _meta(current["management"]),
            _meta(current["API"]),
        ):
            code, message = _code(stub.Predictions, request, metadata=metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "takes the inference key" in message
            replies = stub.StreamPredictions(request, metadata=metadata)
            assert _code(list, replies)[0] == grpc.StatusCode.UNAUTHENTICATED
            replies = stub.StreamPredictions2(iter([request]), metadata=metadata)
            assert _code(list, replies)[0] == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Predictions(request, metadata=_meta(current["inference"]))
        assert json.loads(reply.prediction)["input"] == "x"
        # health needs no key, like REST /ping
        health = stub.Ping(i.google_dot_protobuf_dot_empty__pb2.Empty())
        assert json.loads(health.health) == {"status": "Healthy"}


def test_grpc_management_takes_only_the_management_key(server: Server, pb: Any) -> None:
    current = keys(server)
    m = pb["management_pb2"]
    with grpc.insecure_channel(server.grpc_management) as channel:
        stub = pb["management_pb2_grpc"].ManagementAPIsServiceStub(channel)
        calls = [
            (stub.ListModels, m.ListModelsRequest()),
            (stub.DescribeModel, m.DescribeModelRequest(model_name="echo")),
            (stub.ScaleWorker, m.ScaleWorkerRequest(model_name="echo", min_worker=1)),
            (stub.UnregisterModel, m.UnregisterModelRequest(model_name="nothere")),
            (stub.RegisterModel, m.RegisterModelRequest(url="nothere.mar")),
            (stub.SetDefault, m.SetDefaultRequest(model_name="echo", model_version="1.0")),
        ]
        for rpc, request in calls:
            for metadata in ((), _meta(current["inference"]), _meta(current["API"])):
                code, message = _code(rpc, request, metadata=metadata)
                assert code == grpc.StatusCode.UNAUTHENTICATED
                assert "takes the management key" in message
        listed = stub.ListModels(m.ListModelsRequest(), metadata=_meta(current["management"]))
        assert json.loads(listed.msg)["models"][0]["modelName"] == "echo"


# --- other servers: expired and reused keys, a broken key file, auth off ------------------


def run_cli(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m serve --config serve.yaml` from this checkout, expected to exit at once."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "serve", "--config", "serve.yaml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": python_path},
    )


def _key_file(root: Path, expired: set[str]) -> dict[str, str]:
    now = time.time()
    values = {"management": "Mgmt_Key", "inference": "Infr-Key", "API": "ApiKey00"}
    data: dict[str, Any] = {"API": {"key": values["API"]}}
    for kind in ("management", "inference"):
        moment = now - 3600 if kind in expired else now + 3600
        stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        data[kind] = {"key": values[kind], "expiration time": stamp}
    root.mkdir(parents=True, exist_ok=True)
    path = root / KEY_FILE
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return values


def test_existing_key_file_is_reused_and_expired_keys_are_refused(
    make_server: ServerFactory, tmp_path: Path, pb: Any
) -> None:
    given = _key_file(tmp_path, expired={"inference"})
    server = _start(make_server, tmp_path, disable_token_authorization=False)
    try:
        assert keys(server) == given  # TorchServe's keys kept, not replaced
        assert "keys read from" in server.log()
        assert "The inference key in" in server.log()
        assert "has expired" in server.log()
        url = server.inference + "/predictions/echo"
        assert_refused("POST", url, bearer(given["inference"]), "inference")
        request = pb["inference_pb2"].PredictionsRequest(model_name="echo", input={"a": b"x"})
        with grpc.insecure_channel(server.grpc_inference) as channel:
            stub = pb["inference_pb2_grpc"].InferenceAPIsServiceStub(channel)
            code, _ = _code(stub.Predictions, request, metadata=_meta(given["inference"]))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        status, _, _ = call("GET", server.management + "/models", bearer(given["management"]))
        assert status == 200
        # the API key never expires: it renews the expired key
        status, _, _ = call("GET", server.management + "/token?type=inference", bearer("ApiKey00"))
        assert status == 200
        renewed = keys(server)["inference"]
        status, _, _ = call("POST", url, bearer(renewed))
        assert status == 200
    finally:
        finish(server)
    log = server.log()
    assert not [key for key in (*given.values(), renewed) if key in log]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"management": {"key": "abc"}}', "expiration time"),
        ('{"management": {"key": "a", "expiration time": "2030-01-01T00:00:00Z"}}', '"inference"'),
        ("[]", "JSON object"),
    ],
)
def test_a_broken_key_file_is_a_startup_error_naming_it(
    tmp_path: Path, content: str, fragment: str
) -> None:
    (tmp_path / KEY_FILE).write_text(content)
    config = server_config(tmp_path, disable_token_authorization=False)
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    result = run_cli(tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(tmp_path / KEY_FILE) in result.stderr
    assert fragment in result.stderr
    assert "delete it" in result.stderr
    host, port = config["inference_address"].split(":")
    with socket.socket() as sock:  # nothing was bound
        sock.bind((host, int(port)))


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"token_expiration_min": 0}, "greater than 0"),
        ({"token_expiration_min": "soon"}, "number of minutes"),
        ({"access_log_format": "xml"}, "text or json"),
        ({"access_log": "loud"}, "true or false"),
    ],
)
def test_new_config_keys_are_validated(
    tmp_path: Path, config: dict[str, Any], fragment: str
) -> None:
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    result = run_cli(tmp_path)
    assert result.returncode == 2
    assert next(iter(config)) in result.stderr
    assert fragment in result.stderr


def test_disable_token_auth_flag_opens_every_api(
    make_server: ServerFactory, tmp_path: Path, pb: Any
) -> None:
    server = _start(
        make_server, tmp_path, "--disable-token-auth", disable_token_authorization=False
    )
    assert not (tmp_path / KEY_FILE).exists()
    assert "Token authorization is off" in server.log()
    status, _, _ = call("POST", server.inference + "/predictions/echo")
    assert status == 200
    status, _, _ = call("GET", server.management + "/models")
    assert status == 200
    status, body, _ = call("GET", server.management + "/token?type=inference")
    assert status == 404
    assert "disabled" in body["message"]
    with grpc.insecure_channel(server.grpc_management) as channel:
        stub = pb["management_pb2_grpc"].ManagementAPIsServiceStub(channel)
        assert json.loads(stub.ListModels(pb["management_pb2"].ListModelsRequest()).msg)


def test_an_app_with_a_route_outside_the_guard_refuses_to_start(tmp_path: Path) -> None:
    """A route added around `with_json_errors` would skip the key check: startup fails."""
    from aiohttp import web

    from serve.auth.keys import load_or_create
    from serve.config import Config
    from serve.http.apps import inference_app, management_app
    from serve.models.registry import Registry
    from serve.telemetry.metrics import ServerMetrics
    from serve.workers.intraop import ThreadBudget

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="open")

    async def main() -> None:
        config = Config()
        registry = Registry(config, gpu_count=0, budget=ThreadBudget(1), metrics=ServerMetrics())
        tokens, _ = load_or_create(tmp_path, 60)
        try:
            fine = web.AppRunner(management_app(config, registry, ServerMetrics(), tokens))
            await fine.setup()
            await fine.cleanup()
            app = inference_app(config, registry, ServerMetrics(), tokens)
            app.router.add_get("/sneaky", sneaky)
            runner = web.AppRunner(app)
            with pytest.raises(RuntimeError, match="/sneaky is not guarded"):
                await runner.setup()
            await runner.cleanup()
        finally:
            await registry.close()

    asyncio.run(main())


def test_one_shared_port_keeps_each_apis_key(make_server: ServerFactory, tmp_path: Path) -> None:
    """Inference and management on one address: each route still takes its own API's key."""
    port = server_config(tmp_path)["inference_address"]
    server = _start(
        make_server,
        tmp_path,
        disable_token_authorization=False,
        inference_address=port,
        management_address=port,
    )
    current = keys(server)
    base = server.inference
    for method, path, kind in (
        ("POST", "/predictions/echo", "inference"),
        ("POST", "/models/echo/invoke", "inference"),
        ("GET", "/models", "management"),
        ("GET", "/models/echo", "management"),
        ("GET", "/token?type=inference", "API"),
    ):
        others = [k for k in ("inference", "management", "API") if k != kind]
        for other in others:
            assert_refused(method, base + path, bearer(current[other]), kind)
        status, body, _ = call(method, base + path, bearer(current[kind]))
        assert status == 200, (path, body)
        current = keys(server)  # /token renewed the inference key
    # a path neither API serves takes either key (and tells nothing without one)
    assert_refused("GET", base + "/no/such", None, "inference or management")
    for kind in ("inference", "management"):
        status, _, _ = call("GET", base + "/no/such", bearer(current[kind]))
        assert status == 404
    status, _, _ = call("GET", base + "/ping")
    assert status == 200


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def test_config_properties_sets_the_key_lifetime(tmp_path: Path) -> None:
    """TorchServe's own file: token_expiration_min and auth on, as a TorchServe user has it."""
    store = tmp_path / "store"
    model_folder(store, "echo", src.ECHO)
    ports = server_config(store)
    lines = [
        f"inference_address=http://{ports['inference_address']}",
        f"management_address=http://{ports['management_address']}",
        f"metrics_address=http://{ports['metrics_address']}",
        f"grpc_inference_port={ports['grpc_inference_address'].rpartition(':')[2]}",
        f"grpc_management_port={ports['grpc_management_address'].rpartition(':')[2]}",
        f"model_store={store}",
        "token_expiration_min=5",
    ]
    (tmp_path / "config.properties").write_text("\n".join(lines) + "\n")
    server = Server(tmp_path, ports, yaml_config=False)
    server.start("--ts-config", str(tmp_path / "config.properties"), "--ncs")
    try:
        # start() returns once /ping answers; the management API binds right after inference
        wait_until(lambda: _accepts(ports["management_address"]))
        data = json.loads((tmp_path / KEY_FILE).read_text())
        expires = datetime.fromisoformat(data["inference"]["expiration time"])
        assert 4 * 60 < (expires - datetime.now(UTC)).total_seconds() <= 5 * 60
        assert_refused("GET", server.management + "/models", None, "management")
    finally:
        finish(server)
