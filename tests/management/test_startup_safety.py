"""Start-up mistakes cost nothing: a mistyped store or a busy port is exit 2 before anything
loads, a restore that misses a version keeps it for the next start, and a stop during a slow
load says what it waits for."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import handlers as src
from tests.helpers.clients import http
from tests.helpers.server import Server, model_folder, run_serve, server_config
from tests.management.test_snapshots import saved_models, snapshots

# initialize (the data=None call) writes a marker, then waits for a gate file when there is one
MARKED = """
    import os
    import time

    def handle(data, context):
        store = os.path.dirname(context.system_properties["model_dir"])
        if data is None:
            open(os.path.join(store, "initialized"), "w").close()
            while os.path.exists(os.path.join(store, "hold")):
                time.sleep(0.01)
            return None
        return ["ok"] * len(data)
"""


def _start_fails(root: Path, config: dict[str, object]) -> str:
    """Run the server with `config`; it must exit 2 at once. Its stderr."""
    path = root / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_serve("--config", str(path), cwd=root)
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr
    return result.stderr


def _is_free(address: str) -> bool:
    host, port = address.split(":")
    with socket.socket() as sock:
        # the first server's closed connections may linger in TIME_WAIT; a listener may not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


def test_a_mistyped_model_store_with_a_snapshot_is_exit_2_and_loses_nothing(
    tmp_path: Path,
) -> None:
    store = tmp_path / "model_store"
    model_folder(store, "echo", src.ECHO)
    config = server_config(store, load_models=["echo"])
    first = Server(tmp_path, config)
    first.start()
    first.wait_ready()
    assert first.stop() == 0, first.log()
    written = snapshots(tmp_path)
    assert "echo" in saved_models(written[-1])

    typo = {**config, "model_store": str(tmp_path / "model_stor")}
    stderr = _start_fails(tmp_path, typo)
    assert f"model_store: {tmp_path / 'model_stor'} does not exist" in stderr
    assert all(_is_free(config[key]) for key in ("inference_address", "grpc_inference_address"))
    assert snapshots(tmp_path) == written  # no poorer snapshot written

    (tmp_path / "not-a-folder").write_text("")
    stderr = _start_fails(tmp_path, {**config, "model_store": str(tmp_path / "not-a-folder")})
    assert f"model_store: {tmp_path / 'not-a-folder'} is not a folder" in stderr

    fixed = Server(tmp_path, config)
    fixed.start()
    try:
        fixed.wait_ready()
        assert http("POST", f"{fixed.inference}/predictions/echo", b"x")[0] == 200
    finally:
        assert fixed.stop() == 0, fixed.log()


def test_a_version_that_fails_to_restore_is_kept_for_the_next_start(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for version in ("1.0", "2.0"):
        source = src.VERSIONED.format(version=version)
        model_folder(store, f"m-v{version[0]}", source, name="m", version=version)
    config = server_config(store, load_models=["m-v1", "m-v2"])
    first = Server(tmp_path, config)
    first.start()
    first.wait_ready()
    assert first.stop() == 0, first.log()
    assert set(saved_models(snapshots(tmp_path)[-1])["m"]) == {"1.0", "2.0"}

    shutil.move(store / "m-v1", tmp_path / "m-v1-away")
    second = Server(tmp_path, config)
    second.start()
    try:
        second.wait_ready()
        status, body = http("GET", f"{second.management}/models/m/all")
        assert [v["modelVersion"] for v in json.loads(body)] == ["2.0"]
    finally:
        assert second.stop() == 0, second.log()
    log = second.log()
    assert "Cannot restore model m/1.0 from m-v1" in log
    assert "did not restore: m/1.0 (m-v1:" in log
    assert str(tmp_path / "logs" / "config") in log  # how to drop it: the folder to delete
    newest = saved_models(snapshots(tmp_path)[-1])
    assert set(newest["m"]) == {"1.0", "2.0"}
    assert newest["m"]["1.0"]["marName"] == "m-v1"

    shutil.move(tmp_path / "m-v1-away", store / "m-v1")
    third = Server(tmp_path, config)
    earlier = len(third.log())  # the servers of this test share one log file
    third.start()
    try:
        third.wait_ready()
        for version in ("1.0", "2.0"):
            status, body = http("POST", f"{third.inference}/predictions/m/{version}", b"x")
            assert (status, json.loads(body)) == (200, {"version": version})
    finally:
        assert third.stop() == 0, third.log()
    assert "did not restore" not in third.log()[earlier:]


@pytest.mark.parametrize("key", ["metrics_address", "grpc_management_address"])
def test_a_port_in_use_is_exit_2_naming_the_key_and_loads_nothing(tmp_path: Path, key: str) -> None:
    store = tmp_path / "store"
    model_folder(store, "marked", MARKED)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = server_config(store, load_models=["marked"], **{key: address})
        stderr = _start_fails(tmp_path, config)
    assert f"{key}: {address} is already in use" in stderr
    assert not (store / "initialized").exists()  # the handler's initialize never ran


def test_a_stop_during_a_slow_load_says_why_and_a_second_signal_exits_now(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    model_folder(store, "slow", MARKED)
    (store / "hold").write_text("")  # initialize waits while this file exists
    server = Server(tmp_path, server_config(store, load_models=["slow"]))
    server.start()
    try:
        deadline = time.monotonic() + 60
        while not (store / "initialized").exists():  # initialize has started
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        assert server.process is not None
        server.process.send_signal(signal.SIGINT)
        message = (
            "Stopping: waiting for slow/1.0 to finish loading (executor initialize cannot be "
            "interrupted); press Ctrl-C again to exit now"
        )
        while message not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        sent = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        code = server.wait(timeout=10)
        assert time.monotonic() - sent < 5
        assert code == 1, server.log()
        assert "Second signal: exiting now" in server.log()
    finally:
        (store / "hold").unlink(missing_ok=True)
        server.stop()
