"""TorchServe's config.properties (--ts-config, TS_CONFIG_FILE) serves what serve.yaml serves."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel

from serve.config.properties import parse_properties
from serve.config.torchserve import convert
from serve.grpc.gen.org.pytorch.serve.grpc.management import (
    ListModelsRequest,
    ManagementApIsServiceStub,
)
from tests.helpers import handlers as src
from tests.helpers.clients import http
from tests.helpers.server import Server, free_port, model_folder, run_serve, server_config

IGNORED_LINE = "TorchServe keys ignored here"


def build_store(store: Path) -> None:
    model_folder(store, "m-v1", src.VERSIONED.format(version="1.0"), name="m", version="1.0")
    model_folder(store, "m-v2", src.VERSIONED.format(version="2.0"), name="m", version="2.0")
    model_folder(store, "echo", src.ECHO)


def addresses() -> dict[str, str]:
    return {
        key: f"127.0.0.1:{free_port()}"
        for key in (
            "inference_address",
            "management_address",
            "metrics_address",
            "grpc_inference_address",
            "grpc_management_address",
        )
    }


def properties(ports: dict[str, str], body: str) -> str:
    """A config.properties as TorchServe's docs write one, on the given addresses."""
    grpc_inference = ports["grpc_inference_address"].split(":")[1]
    grpc_management = ports["grpc_management_address"].split(":")[1]
    head = f"""\
        # TorchServe 0.12 config.properties
        inference_address=http://{ports["inference_address"]}
        management_address: http://{ports["management_address"]}
        metrics_address   http://{ports["metrics_address"]}
        grpc_inference_port={grpc_inference}
        grpc_management_port={grpc_management}
        disable_token_authorization=true
        """
    return textwrap.dedent(head) + textwrap.dedent(body)


def describe(server: Server, model: str) -> list[dict[str, Any]]:
    status, body = http("GET", f"{server.management}/models/{model}/all")
    assert status == 200, body
    bodies: list[dict[str, Any]] = json.loads(body)
    for item in bodies:
        item["workers"] = len(item["workers"])
    return bodies


async def grpc_model_names(address: str) -> list[str]:
    host, port = address.split(":")
    channel = Channel(host, int(port))
    try:
        reply = await ManagementApIsServiceStub(channel).list_models(ListModelsRequest())
    finally:
        channel.close()
    return [m["modelName"] for m in json.loads(reply.msg)["models"]]


SNAPSHOT_BODY = """\
    model_store=$$TEST_MODEL_STORE$$
    enable_envvars_config=true
    job_queue_size=50
    number_of_netty_threads=4
    netty_client_threads=2
    vmargs=-Xmx4g -XX:+ExitOnOutOfMemoryError
    metrics_mode=prometheus
    model_snapshot={\\
      "name": "startup.cfg",\\
      "modelCount": 3,\\
      "models": {\\
        "m": {\\
          "1.0": {"defaultVersion": false, "marName": "m-v1", "minWorkers": 1,\\
                  "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 50, "responseTimeout": 30},\\
          "2.0": {"defaultVersion": true, "marName": "m-v2", "minWorkers": 2,\\
                  "maxWorkers": 3, "batchSize": 2, "maxBatchDelay": 20, "responseTimeout": 60}\\
        },\\
        "echo": {\\
          "1.0": {"defaultVersion": true, "marName": "echo", "minWorkers": 1, "maxWorkers": 1,\\
                  "batchSize": 8, "maxBatchDelay": -1, "responseTimeout": 0}\\
        }\\
      }\\
    }
    """

EQUIVALENT_YAML = {
    "job_queue_size": 7,
    "load_models": ["m=m-v1", "m=m-v2", "echo"],
    "models": {
        "m": {
            "1.0": {
                "min_workers": 1,
                "max_workers": 2,
                "batch_size": 4,
                "max_batch_delay": 50,
                "response_timeout": 30,
            },
            "2.0": {
                "default_version": True,
                "min_workers": 2,
                "max_workers": 3,
                "batch_size": 2,
                "max_batch_delay": 20,
                "response_timeout": 60,
            },
        },
        "echo": {"1.0": {"min_workers": 1, "max_workers": 1, "batch_size": 8}},
    },
}


def test_config_properties_serve_what_the_equivalent_serve_yaml_serves(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    ports = addresses()
    # the file names one inference port, TS_INFERENCE_ADDRESS overrides it (envvars config on)
    file_ports = {**ports, "inference_address": f"127.0.0.1:{free_port()}"}
    path = tmp_path / "ts" / "config.properties"
    path.parent.mkdir()
    path.write_text(properties(file_ports, SNAPSHOT_BODY))
    env = {
        "TEST_MODEL_STORE": str(store),
        "TS_INFERENCE_ADDRESS": f"http://{ports['inference_address']}",
        "TS_JOB_QUEUE_SIZE": "7",
    }
    ts = Server(path.parent, ports, yaml_config=False, env=env)
    ts.start("--ts-config", str(path))
    try:
        ts.wait_ready()
        from_properties = {name: describe(ts, name) for name in ("m", "echo")}
        assert asyncio.run(grpc_model_names(ports["grpc_management_address"])) == ["echo", "m"]
        status, body = http("POST", f"{ts.inference}/predictions/m", b"x")
        assert (status, json.loads(body)) == (200, {"version": "2.0"})
    finally:
        assert ts.stop() == 0, ts.log()
    ignored = [line for line in ts.log().splitlines() if IGNORED_LINE in line]
    assert len(ignored) == 1, ts.log()
    for key in ("number_of_netty_threads", "netty_client_threads", "vmargs"):
        assert key in ignored[0]
    assert "metrics_mode" not in ignored[0]  # a key of ours now (metrics configuration)
    assert "unknown keys" not in ts.log()

    (tmp_path / "yaml").mkdir()
    yaml_server = Server(tmp_path / "yaml", server_config(store, **EQUIVALENT_YAML))
    yaml_server.start("--ncs")
    try:
        yaml_server.wait_ready()
        from_yaml = {name: describe(yaml_server, name) for name in ("m", "echo")}
    finally:
        assert yaml_server.stop() == 0, yaml_server.log()

    assert from_properties == from_yaml
    m2, m1 = from_properties["m"]  # the default version comes first
    assert (m2["modelVersion"], m1["modelVersion"]) == ("2.0", "1.0")
    expected_m1 = {"minWorkers": 1, "maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 50}
    assert {k: m1[k] for k in expected_m1} == expected_m1
    assert (m1["responseTimeout"], m2["responseTimeout"]) == (30, 60)
    expected_m2 = {"minWorkers": 2, "maxWorkers": 3, "batchSize": 2, "maxBatchDelay": 20}
    assert {k: m2[k] for k in expected_m2} == expected_m2
    assert m2["workers"] == 2
    assert m2["jobQueueStatus"]["remainingCapacity"] == 7  # TS_JOB_QUEUE_SIZE won
    (echo,) = from_properties["echo"]
    # values <= 0 are ignored, as TorchServe ignores them: the defaults apply
    assert (echo["batchSize"], echo["maxBatchDelay"], echo["responseTimeout"]) == (8, 100, 120)


@pytest.mark.parametrize("form", ["properties", "yaml"])
def test_inference_and_management_on_one_address(tmp_path: Path, form: str) -> None:
    store = tmp_path / "store"
    model_folder(store, "echo", src.ECHO)
    ports = addresses()
    ports["management_address"] = ports["inference_address"]
    if form == "properties":
        path = tmp_path / "config.properties"
        path.write_text(properties(ports, f"model_store={store}\nload_models=echo\n"))
        server = Server(tmp_path, ports, yaml_config=False)
        server.start("--ts-config", str(path))
    else:
        server = Server(tmp_path, {**server_config(store, load_models=["echo"]), **ports})
        server.start()
    try:
        server.wait_ready()
        assert server.inference == server.management
        text = {"Content-Type": "text/plain"}
        status, body = http("POST", f"{server.inference}/predictions/echo", b"hi", headers=text)
        assert status == 200
        assert json.loads(body)["input"] == "hi"
        status, body = http("GET", f"{server.management}/models")
        assert status == 200
        assert json.loads(body)["models"][0]["modelName"] == "echo"
        status, _ = http("PUT", f"{server.management}/models/echo?min_worker=2&synchronous=true")
        assert status == 200
        assert describe(server, "echo")[0]["minWorkers"] == 2
        assert http("OPTIONS", f"{server.inference}/")[0] == 200
        assert http("GET", f"{server.inference}/nothing/here")[0] == 404
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ("job_queue_size=many", "job_queue_size", "expected an integer"),
        ("enable_model_api=maybe", "enable_model_api", "true or false"),
        ("default_response_timeout=soon", "default_response_timeout", "expected a number"),
        ("grpc_inference_port=seventy", "grpc_inference_port", "expected an integer"),
        ("metrics_address=https://127.0.0.1:8443", "metrics_address", "TLS"),
        ("models={not json", "models", "not valid JSON"),
        ('models={"m": {"1.0": {"batchSize": "big"}}}', "models.m.1.0.batch_size", "integer"),
        (
            'model_snapshot={"modelCount": 2, "models": {"m": {}}}',
            "model_snapshot",
            "modelCount is 2",
        ),
        ("model_store=$$SURELY_NOT_SET_ANYWHERE$$", "model_store", "SURELY_NOT_SET_ANYWHERE"),
        ("load_models=nothere.mar", "load_models[0]", "not in the model store"),
        ("max_request_size=1\\u00zz", "--ts-config", "escape"),
    ],
)
def test_a_malformed_value_names_the_key_and_exits_2_unbound(
    tmp_path: Path, line: str, key: str, fragment: str
) -> None:
    (tmp_path / "store").mkdir()
    ports = addresses()
    path = tmp_path / "config.properties"
    path.write_text(properties(ports, f"model_store={tmp_path / 'store'}\n{line}\n"))
    result = run_serve("--ts-config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr
    assert key in result.stderr, result.stderr
    assert fragment in result.stderr, result.stderr
    host, port = ports["inference_address"].split(":")
    with socket.socket() as sock:  # nothing was bound: the port is still free
        sock.bind((host, int(port)))


def test_ts_config_file_env_and_unknown_keys(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model_folder(store, "echo", src.ECHO)
    ports = addresses()
    path = tmp_path / "config.properties"
    body = f"model_store={store}\nload_models=echo\nsome_plugin_setting=1\ncors_allowed_origin=*\n"
    path.write_text(properties(ports, body))
    env = {"TS_CONFIG_FILE": str(path), "LOG_LOCATION": str(tmp_path / "ts-logs")}
    server = Server(tmp_path, ports, yaml_config=False, env=env)
    server.start("--foreground", "--start")
    try:
        server.wait_ready()
        assert http("POST", f"{server.inference}/predictions/echo", b"x")[0] == 200
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "unknown keys ignored: some_plugin_setting" in log
    assert next(line for line in log.splitlines() if IGNORED_LINE in line).endswith(
        "cors_allowed_origin"
    )
    # TS_CONFIG_FILE is a config: no snapshot is restored, but they are written ($LOG_LOCATION)
    assert list((tmp_path / "ts-logs" / "config").glob("*-startup.cfg"))


def test_an_unknown_key_warning_suggests_the_key_meant() -> None:
    # a typo is ignored, as TorchServe ignores it, so the warning must point at the fix
    warnings = convert({"model_stor": "x", "grpc_inference_prot": "1", "some_plugin_setting": "1"})
    assert warnings.warnings == [
        "config.properties: unknown keys ignored: model_stor (did you mean 'model_store'?), "
        "grpc_inference_prot (did you mean 'grpc_inference_port'?), some_plugin_setting"
    ]


def test_yaml_and_properties_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("job_queue_size: 3\n")
    (tmp_path / "c.properties").write_text("job_queue_size=3\n")
    args = ("--config", "c.yaml", "--ts-config", "c.properties")
    result = run_serve(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "--ts-config" in result.stderr
    assert "not both" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1\nb: 2\nc 3\n", {"a": "1", "b": "2", "c": "3"}),
        ("# comment\n! also\n  key = value with spaces  \n", {"key": "value with spaces  "}),
        ("list=one,\\\n     two,\\\n     three\n", {"list": "one,two,three"}),
        ("path=C:\\\\dir\\\\file\nk\\=ey=v\n", {"path": "C:\\dir\\file", "k=ey": "v"}),
        (
            "tab=a\\tb\nuni=\\u00e9t\\u00e9\nsame=1\nsame=2\n",
            {"tab": "a\tb", "uni": "été", "same": "2"},
        ),
        ("empty=\nodd=ends\\\\\nnext=x\n", {"empty": "", "odd": "ends\\", "next": "x"}),
    ],
)
def test_java_properties_syntax(text: str, expected: dict[str, str]) -> None:
    assert parse_properties(text) == expected


def test_default_startup_timeout_is_every_models_default(tmp_path: Path) -> None:
    """TorchServe's rule: the archive's startupTimeout, else the register parameter, else
    config.properties' default_startup_timeout (here 7, not the built-in 120)."""
    store = tmp_path / "store"
    model_folder(store, "plain", src.ECHO)
    model_folder(store, "own", src.ECHO, model_config={"startupTimeout": 5})
    ports = addresses()
    path = tmp_path / "config.properties"
    body = f"""\
        model_store={store}
        load_models=plain
        enable_model_api=true
        default_startup_timeout=7
        """
    path.write_text(properties(ports, body))
    server = Server(tmp_path, ports, yaml_config=False)
    server.start("--ts-config", str(path), "--ncs")
    try:
        server.wait_ready()
        for query in ("url=own", "url=plain&model_name=given&startup_timeout=9"):
            status, answer = http("POST", f"{server.management}/models?{query}")
            assert status == 200, answer
        timeouts = {
            name: describe(server, name)[0]["startupTimeout"] for name in ("plain", "own", "given")
        }
    finally:
        assert server.stop() == 0, server.log()
    assert timeouts == {"plain": 7, "own": 5, "given": 9}
    assert "default_startup_timeout" not in server.log()  # read, so not in the ignored list
