"""model-config `startupTimeout`: a load past it fails as TorchServe reports it, and is retried.

The handler's initialize waits on a gate file the test creates, so "past the timeout" and
"within it" are decided by the test, not by timing.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import poll, run
from tests.support import Server, http, model_folder

# initialize records its thread, then waits until the gate file exists; handle names its thread
GATED = """
    import pathlib
    import threading
    import time

    class Handler:
        def initialize(self, context):
            here = pathlib.Path(context.system_properties["model_dir"])
            folder = pathlib.Path((here / "gate.txt").read_text().strip())
            with (folder / "inits").open("a") as inits:
                inits.write(threading.current_thread().name + "\\n")
            while not (folder / "open").exists():
                time.sleep(0.01)  # a handler's own wait: the test never sleeps on it

        def handle(self, data, context):
            return [threading.current_thread().name for _ in data]
"""

TIMEOUT_LINE = (
    "org.pytorch.serve.wlm.WorkerInitializationException: "
    "Backend worker did not respond in given time"
)


def _gated_model(server: Server, name: str, gate: Path, config: dict[str, Any]) -> None:
    gate.mkdir()
    model_folder(
        server.root / "store",
        name,
        GATED,
        model_config=config,
        extra_files={"gate.txt": str(gate)},
    )


def _describe(server: Server, name: str) -> dict[str, Any]:
    status, body = http("GET", server.management + f"/models/{name}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)[0]
    return answer


def _timed_out_ids(log: str) -> list[str]:
    """The executors that were abandoned: TorchServe's two lines, one after the other."""
    lines = log.splitlines()
    ids = []
    for line, following in itertools.pairwise(lines):
        found = re.search(r"executor (\d+): Backend worker error", line)
        if found and TIMEOUT_LINE in following:
            ids.append(found.group(1))
    return ids


def test_a_load_past_the_startup_timeout_fails_is_retried_and_never_serves(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    _gated_model(server, "slow_start", gate, {"startupTimeout": 1, "responseTimeout": 1})
    start = len(server.log())
    status, _ = http("POST", server.management + "/models?url=slow_start&synchronous=false")
    assert status == 202
    try:
        run(poll(lambda: bool(_timed_out_ids(server.log()[start:]))))
        described = _describe(server, "slow_start")
        assert described["startupTimeout"] == 1
        assert all(w["status"] != "READY" for w in described["workers"])
        abandoned = _timed_out_ids(server.log()[start:])

        (gate / "open").touch()
        # the retry (the pool's backoff) loads; the abandoned thread finishes and exits unused
        run(
            poll(
                lambda: any(
                    w["status"] == "READY" for w in _describe(server, "slow_start")["workers"]
                )
            )
        )
        run(poll(lambda: "finished loading after its startup timeout" in server.log()[start:]))
        answered = set()
        for _ in range(8):
            status, body = http("POST", server.inference + "/predictions/slow_start", b"x")
            assert status == 200, body
            answered.add(body.decode())
        assert not any(f"W-{worker_id}-" in name for name in answered for worker_id in abandoned)
        assert "retrying the load" in server.log()[start:]
    finally:
        (gate / "open").touch()
        http("DELETE", server.management + "/models/slow_start")


def test_a_load_within_the_startup_timeout_becomes_ready(server: Server, tmp_path: Path) -> None:
    # TorchServe's own test: responseTimeout 1 does not apply to the load, startupTimeout does
    gate = tmp_path / "gate"
    _gated_model(server, "fine_start", gate, {"startupTimeout": 30, "responseTimeout": 1})
    start = len(server.log())
    status, _ = http("POST", server.management + "/models?url=fine_start&synchronous=false")
    assert status == 202
    try:
        run(poll(lambda: (gate / "inits").exists()))  # initialize has begun
        described = _describe(server, "fine_start")
        assert described["startupTimeout"] == 30
        assert [w["status"] for w in described["workers"]] == ["LOADING"]
        (gate / "open").touch()
        run(poll(lambda: _describe(server, "fine_start")["workers"][0]["status"] == "READY"))
        assert http("POST", server.inference + "/predictions/fine_start", b"x")[0] == 200
        assert "Backend worker error" not in server.log()[start:]
    finally:
        (gate / "open").touch()
        http("DELETE", server.management + "/models/fine_start")


def test_a_synchronous_register_past_the_startup_timeout_answers_500(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    _gated_model(server, "never_starts", gate, {"startupTimeout": 1})
    try:
        status, body = http("POST", server.management + "/models?url=never_starts")
        assert status == 500
        message = json.loads(body)["message"]
        assert "Failed to start workers for model never_starts" in message
        assert "Backend worker did not respond in given time" in message
        assert http("GET", server.management + "/models/never_starts")[0] == 404
    finally:
        (gate / "open").touch()  # the abandoned initialize returns, and its thread exits


def test_the_register_parameter_sets_the_startup_timeout_when_the_archive_does_not(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    _gated_model(server, "param_start", gate, {"responseTimeout": 5})
    (gate / "open").touch()
    register = "/models?url=param_start&startup_timeout=45"
    try:
        assert http("POST", server.management + register)[0] == 200
        assert _describe(server, "param_start")["startupTimeout"] == 45
    finally:
        http("DELETE", server.management + "/models/param_start")
