"""Config snapshots: written after each change, restored after a restart, never fatal."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from grpclib.client import Channel

from serve.config.properties import escape_value, parse_properties
from serve.grpc.gen.org.pytorch.serve.grpc.management import (
    ManagementApIsServiceStub,
    ScaleWorkerRequest,
)
from serve.routing.split import Split
from tests.helpers import handlers as src
from tests.helpers.clients import call_json, http
from tests.helpers.server import Server, model_folder, server_config

NAME = re.compile(r"^\d{17}-(startup|snapshot|shutdown)\.cfg$")


def build_store(store: Path) -> None:
    model_folder(store, "m-v1", src.VERSIONED.format(version="1.0"), name="m", version="1.0")
    model_folder(store, "m-v2", src.VERSIONED.format(version="2.0"), name="m", version="2.0")
    model_folder(store, "echo", src.ECHO)


def snapshots(root: Path) -> list[Path]:
    """The written snapshots, oldest first (not the hidden temp file of one being written)."""
    folder = root / "logs" / "config"
    return sorted(p for p in folder.iterdir() if NAME.match(p.name)) if folder.is_dir() else []


def saved_models(path: Path) -> dict[str, Any]:
    models: dict[str, Any] = json.loads(parse_properties(path.read_text())["model_snapshot"])
    return dict(models["models"])


def wait_for_snapshot(root: Path, check: Any, timeout: float = 30.0) -> Path:
    """The newest snapshot once `check(models)` holds for it (polling the folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = snapshots(root)
        if files and check(saved_models(files[-1])):
            return files[-1]
        time.sleep(0.02)
    raise AssertionError(f"no snapshot matched in {timeout}s: {[p.name for p in files]}")


def call(method: str, url: str) -> Any:
    """The JSON answer of a call that must succeed."""
    status, body = call_json(method, url, timeout=60)
    assert status in (200, 202), (method, url, status, body)
    return body


def state(server: Server) -> dict[str, Any]:
    """Each registered version's settings, and each model's default version."""
    found: dict[str, Any] = {}
    for entry in call("GET", f"{server.management}/models")["models"]:
        versions = call("GET", f"{server.management}/models/{entry['modelName']}/all")
        found[entry["modelName"]] = {
            "default": versions[0]["modelVersion"],
            **{
                v["modelVersion"]: (
                    v["modelUrl"],
                    v["minWorkers"],
                    v["maxWorkers"],
                    v["batchSize"],
                    v["maxBatchDelay"],
                    v["responseTimeout"],
                )
                for v in versions
            },
        }
    return found


def test_a_restart_restores_what_the_api_registered(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    config = server_config(store, enable_model_api=True, load_models=["echo"])
    server = Server(tmp_path, config)
    server.start()
    try:
        server.wait_ready()
        m = server.management
        call("POST", f"{m}/models?url=m-v1&initial_workers=1&synchronous=true")
        call("POST", f"{m}/models?url=m-v2&initial_workers=1&batch_size=4&max_batch_delay=30")
        call("PUT", f"{m}/models/m/2.0/set-default")
        # a burst: the last state must be what is saved last
        call("PUT", f"{m}/models/m/1.0?min_worker=3&max_worker=4")
        call("PUT", f"{m}/models/m/1.0?min_worker=2&max_worker=3")
        call("DELETE", f"{m}/models/echo")
        call("POST", f"{m}/models?url=echo&initial_workers=1&response_timeout=7")
        server.wait_ready()
        before = state(server)
    finally:
        assert server.stop() == 0, server.log()
    assert before["m"] == {
        "default": "2.0",
        "1.0": ("m-v1", 2, 3, 1, 100, 120),
        "2.0": ("m-v2", 1, 1, 4, 30, 120),
    }
    files = snapshots(tmp_path)
    every = sorted((tmp_path / "logs" / "config").iterdir())
    assert every == files, every  # after a stop: only snapshots, nothing half-written
    kinds = [p.name.split("-")[1] for p in files]
    assert (kinds[0], kinds[-1]) == ("startup.cfg", "shutdown.cfg")
    assert "snapshot.cfg" in kinds
    assert not list((tmp_path / "logs" / "config").glob(".*"))  # no temp file left behind
    newest = saved_models(files[-1])
    assert newest["m"]["1.0"]["minWorkers"] == 2
    assert newest["m"]["2.0"]["defaultVersion"] is True

    restarted = Server(tmp_path, config)
    restarted.start()
    try:
        restarted.wait_ready()
        assert state(restarted) == before
        status, body = http("POST", f"{restarted.inference}/predictions/m", b"x")
        assert (status, json.loads(body)) == (200, {"version": "2.0"})
    finally:
        assert restarted.stop() == 0, restarted.log()
    assert f"from config snapshot {files[-1]}" in restarted.log()

    empty = Server(tmp_path, config)
    count = len(snapshots(tmp_path))
    empty.start("--ncs", "--models", "echo")
    try:
        empty.wait_ready()
        assert list(state(empty)) == ["echo"]  # the config's models, not the snapshot's
    finally:
        assert empty.stop() == 0, empty.log()
    assert len(snapshots(tmp_path)) == count  # --ncs writes none either


def test_a_corrupt_snapshot_and_a_missing_archive_are_skipped(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    config = server_config(store, load_models=["echo", "m-v1"])
    first = Server(tmp_path, config)
    first.start()
    first.wait_ready()
    assert first.stop() == 0, first.log()
    good = snapshots(tmp_path)[-1]
    assert set(saved_models(good)) == {"echo", "m"}
    folder = good.parent
    garbage = folder / "29991231235959999-snapshot.cfg"
    garbage.write_bytes(b"\x00\xff not a snapshot \x89")
    truncated = folder / "29991231235959998-shutdown.cfg"
    text = good.read_text()
    truncated.write_text(text[: text.index("model_snapshot=") + 40])
    no_snapshot = folder / "29991231235959997-snapshot.cfg"
    no_snapshot.write_text(text[: text.index("model_snapshot=")])
    shutil.rmtree(store / "m-v1")

    config["load_models"] = []  # the snapshot gives the models
    second = Server(tmp_path, config)
    second.start()
    try:
        second.wait_ready()
        assert list(state(second)) == ["echo"]
        assert http("POST", f"{second.inference}/predictions/echo", b"x")[0] == 200
    finally:
        assert second.stop() == 0, second.log()
    log = second.log()
    for bad in (garbage, truncated, no_snapshot):
        assert f"Skipping corrupt config snapshot {bad}" in log
    assert f"from config snapshot {good}" in log
    assert "Cannot restore model m/1.0 from m-v1" in log

    # a snapshot is a config.properties: served as --ts-config it gives the same models
    (tmp_path / "third").mkdir()
    third = Server(tmp_path / "third", config, yaml_config=False)
    third.start("--ts-config", str(good))
    try:
        third.wait_ready()
        assert list(state(third)) == ["echo"]
    finally:
        assert third.stop() == 0, third.log()
    assert "ignored" not in third.log()  # every key it wrote is one it reads
    assert "Cannot restore model m/1.0 from m-v1" in third.log()


def test_grpc_changes_are_saved_and_a_failing_write_fails_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    server = Server(tmp_path, server_config(store, load_models=["echo"]))
    server.start()
    try:
        server.wait_ready()
        host, port = server.grpc_management.split(":")

        async def scale() -> str:
            channel = Channel(host, int(port))
            try:
                stub = ManagementApIsServiceStub(channel)
                request = ScaleWorkerRequest(model_name="echo", min_worker=2, max_worker=3)
                return (await stub.scale_worker(request)).msg
            finally:
                channel.close()

        assert asyncio.run(scale()) == "Processing worker updates..."
        newest = wait_for_snapshot(tmp_path, lambda m: m["echo"]["1.0"]["maxWorkers"] == 3)
        assert newest.name.endswith("-snapshot.cfg")
        assert saved_models(newest)["echo"]["1.0"]["minWorkers"] == 2
    finally:
        assert server.stop() == 0, server.log()

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the snapshot folder should be")
    config = server_config(store, load_models=["echo"], snapshot_dir=str(blocked / "config"))
    server = Server(tmp_path / "second", config)
    (tmp_path / "second").mkdir()
    server.start()
    try:
        server.wait_ready()
        status, _ = http("PUT", f"{server.management}/models/echo?min_worker=2&synchronous=true")
        assert status == 200
        assert http("POST", f"{server.inference}/predictions/echo", b"x")[0] == 200
    finally:
        assert server.stop() == 0, server.log()
    assert "Cannot write config snapshot" in server.log()
    assert str(blocked / "config") in server.log()


def _torchserve_version(default: bool, mar: str, workers: int) -> dict[str, Any]:
    return {
        "defaultVersion": default,
        "marName": mar,
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": 1,
        "maxBatchDelay": 100,
        "responseTimeout": 120,
        "startupTimeout": 120,
        "runtimeType": "python",
    }


_TORCHSERVE_MODELS = {
    "name": "20240101000000000-shutdown.cfg",
    "modelCount": 2,
    "created": 1796041402818,
    "models": {
        "m": {
            "1.0": _torchserve_version(False, "m-v1", 2),
            "2.0": _torchserve_version(True, "m-v2", 1),
        }
    },
}
# What TorchServe 0.12 writes (copied from one of its snapshots): java.util.Properties.store
# escapes ':' and writes the pretty-printed JSON's line breaks as \n; keys of its own too.
TORCHSERVE_SNAPSHOT = "\n".join(
    [
        "#Saving snapshot",
        "#Mon Nov 30 12:23:22 UTC 2026",
        "default_workers_per_model=0",
        "grpc_inference_port=7070",
        "allowed_urls=file\\://.*,http(s)?\\://.*",
        "number_of_gpu=0",
        "python=/opt/venv/bin/python3",
        "model_snapshot="
        + json.dumps(_TORCHSERVE_MODELS, indent=2).replace(":", "\\:").replace("\n", "\\n"),
        "tsConfigFile=/etc/torchserve/config.properties",
        "version=0.12.0",
        "management_address=http\\://127.0.0.1\\:8081",
        "model_store=/mnt/models/model-store",
        "workflow_store=/mnt/models/model-store",
    ]
)


def test_a_snapshot_written_by_torchserve_is_restored(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    folder = tmp_path / "logs" / "config"
    folder.mkdir(parents=True)
    (folder / "20240101000000000-shutdown.cfg").write_text(TORCHSERVE_SNAPSHOT)
    server = Server(tmp_path, server_config(store))  # serve.yaml gives the server settings
    server.start()
    try:
        server.wait_ready()
        assert state(server) == {
            "m": {
                "default": "2.0",
                "2.0": ("m-v2", 1, 1, 1, 100, 120),
                "1.0": ("m-v1", 2, 2, 1, 100, 120),
            }
        }
    finally:
        assert server.stop() == 0, server.log()


# --- traffic splits --------------------------------------------------------------------------

SPLIT = {"1.0": 75, "2.0": 25, "shadow": {"2.0": 25}}
ROUTING_KEYS = [f"user-{i}" for i in range(48)]


def routed(server: Server, keys: list[str]) -> dict[str, str | None]:
    """The version that answered each unversioned request, sent with its routing key."""
    found = {}
    for key in keys:
        status, body, headers = _predict(f"{server.inference}/predictions/m", key)
        assert status == 200, (key, status, body)
        found[key] = headers.get("X-Model-Version")
        assert json.loads(body) == {"version": found[key]}
    return found


def _predict(url: str, key: str) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, b"x", {"X-Routing-Key": key}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read(), response.headers


def has_split(models: dict[str, Any]) -> bool:
    return any("trafficWeight" in v for v in models.get("m", {}).values())


def test_a_restart_restores_the_traffic_split_over_the_config_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    # serve.yaml's split is the starting point; the one set through the API must win on restart
    config = server_config(
        store,
        enable_model_api=True,
        load_models=["m-v1"],
        models={"m": {"traffic": {"1.0": 100}}},
    )
    first = Server(tmp_path, config)
    first.start()
    try:
        first.wait_ready()
        m = first.management
        call("POST", f"{m}/models?url=m-v2&initial_workers=1&synchronous=true")
        status, body = http("PUT", f"{m}/models/m/traffic", json.dumps(SPLIT).encode(), timeout=60)
        assert status == 200, body
        # the change itself is saved, before any shutdown snapshot
        assert saved_models(snapshots(tmp_path)[0])["m"]["1.0"]["trafficWeight"] == 100
        saved = saved_models(
            wait_for_snapshot(tmp_path, lambda ms: "trafficWeight" in ms["m"].get("2.0", {}))
        )
        assert saved["m"]["1.0"]["trafficWeight"] == 75
        assert (saved["m"]["2.0"]["trafficWeight"], saved["m"]["2.0"]["shadowPercent"]) == (25, 25)
        assert "shadowPercent" not in saved["m"]["1.0"]
    finally:
        assert first.stop() == 0, first.log()
    assert has_split(saved_models(snapshots(tmp_path)[-1]))

    second = Server(tmp_path, config)
    second.start()
    try:
        second.wait_ready()
        m = second.management
        assert call("GET", f"{m}/models/m/traffic") == SPLIT
        assert call("GET", f"{m}/models/m")[0]["trafficSplit"] == SPLIT
        split = Split.parse(SPLIT)
        expected = {key: split.choose(key) for key in ROUTING_KEYS}
        assert set(expected.values()) == {"1.0", "2.0"}  # the keys reach both versions
        assert routed(second, ROUTING_KEYS) == expected
    finally:
        assert second.stop() == 0, second.log()
    assert "Not applying the traffic split(s) of models.m.traffic" in second.log()

    # 2.0's archive is gone: the split keeps what was restored, and a DELETE is saved
    shutil.rmtree(store / "m-v2")
    third = Server(tmp_path, config)
    third.start()
    try:
        third.wait_ready()
        m = third.management
        assert call("GET", f"{m}/models/m/traffic") == {"1.0": 75}
        assert set(routed(third, ROUTING_KEYS[:8]).values()) == {"1.0"}
        call("DELETE", f"{m}/models/m/traffic")
        wait_for_snapshot(tmp_path, lambda models: "m" in models and not has_split(models))
    finally:
        assert third.stop() == 0, third.log()
    assert "Cannot restore model m/2.0 from m-v2" in third.log()
    assert "Traffic split of model m: dropping version(s) 2.0" in third.log()


def _snapshot_version(default: bool, mar: str, **extra: Any) -> dict[str, Any]:
    return {**_torchserve_version(default, mar, 1), **extra}


def test_a_split_left_without_weight_falls_back_to_the_default_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(store)
    models = {
        "m": {  # the only weighted version did not come back
            "1.0": _snapshot_version(True, "m-v1", trafficWeight=0),
            "2.0": _snapshot_version(False, "m-gone", trafficWeight=100, shadowPercent=10),
        },
        "echo": {"1.0": _snapshot_version(True, "echo", trafficWeight="lots")},
        "gone": {"1.0": _snapshot_version(True, "gone", trafficWeight=100)},
    }
    saved: dict[str, Any] = {
        "name": "20240101000000000-shutdown.cfg",
        "modelCount": 4,
        "models": models,
    }
    folder = tmp_path / "logs" / "config"
    folder.mkdir(parents=True)
    (folder / saved["name"]).write_text(f"model_snapshot={escape_value(json.dumps(saved))}\n")
    server = Server(tmp_path, server_config(store))
    server.start()
    try:
        server.wait_ready()
        m = server.management
        assert call("GET", f"{m}/models/m/traffic") == {"1.0": 100}
        assert "trafficSplit" not in call("GET", f"{m}/models/m")[0]
        assert set(routed(server, ROUTING_KEYS[:8]).values()) == {"1.0"}
        assert call("GET", f"{m}/models/echo/traffic") == {"1.0": 100}
        assert http("POST", f"{server.inference}/predictions/echo", b"x")[0] == 200
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "Traffic split of model m: dropping version(s) 2.0" in log
    assert "Cannot restore the traffic split of model m (" in log
    assert "version 1.0 takes all its traffic" in log
    assert "Cannot restore the traffic split of model echo (weight must be an integer" in log
    assert "Cannot restore the traffic split of model gone: it was not restored" in log
