"""Run inside private mount and network namespaces by tests/kserve/test_kserve_runtime.py: start the
server from the ServingRuntime's container command, args and env exactly as written, call it
the way KServe and its clients would, and print what it saw as one JSON line.

Usage: python tests/kserve/kserve_pod.py RUNTIME.yaml WORKDIR
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

READY_TIMEOUT = 120.0


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """Status and decoded JSON body (text when not JSON); 0 when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def arg(args: list[str], flag: str) -> str:
    """The value of `--flag=value` in the container's args."""
    values = [item.split("=", 1)[1] for item in args if item.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} given {len(values)} times in {args}"
    return values[0]


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> int:
    """Poll the readiness probe's path until 200 (the kubelet does the same)."""
    deadline = time.monotonic() + READY_TIMEOUT
    status = 0
    while time.monotonic() < deadline and process.poll() is None:
        status, _ = http("GET", url)
        if status == 200:
            return status
        time.sleep(0.1)
    return status


def grpc_infer(port: int) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = grpcclient.InferInput("a", [2, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=np.float32))
    result = client.infer("mnist", [tensor], request_id="grpc-1")
    reply = result.get_response(as_json=True)
    return {
        "id": reply["id"],
        "outputs": [
            {
                "name": out["name"],
                "shape": [int(n) for n in out["shape"]],
                "data": result.as_numpy(out["name"]).tolist(),
            }
            for out in reply["outputs"]
        ],
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
    }


def main() -> int:
    runtime = yaml.safe_load(Path(sys.argv[1]).read_text())
    workdir = Path(sys.argv[2])
    container = runtime["spec"]["containers"][0]
    command = container.get("command", []) + container.get("args", [])
    env = dict(os.environ)
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    http_port = container["ports"][0]["containerPort"]
    grpc_port = int(arg(container["args"], "--grpc-inference-address").rsplit(":", 1)[1])
    base = f"http://127.0.0.1:{http_port}"
    probes = {
        name: f"http://127.0.0.1:{container[name]['httpGet']['port']}"
        + container[name]["httpGet"]["path"]
        for name in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=log)
    seen: dict[str, Any] = {"command": command}
    try:
        seen["ready_status"] = wait_ready(probes["readinessProbe"], process)
        seen["probes"] = {name: http("GET", url)[0] for name, url in probes.items()}
        seen["v1"] = http(
            "POST", base + "/v1/models/mnist:predict", {"instances": [{"data": [1, 2]}]}
        )
        v2_request = {
            "id": "rest-1",
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2.5]}],
        }
        seen["v2"] = http("POST", base + "/v2/models/mnist/infer", v2_request)
        seen["v2_unknown"] = http("POST", base + "/v2/models/nope/infer", v2_request)
        annotations = runtime["spec"]["annotations"]
        metrics = "http://127.0.0.1:{}{}".format(
            annotations["prometheus.kserve.io/port"], annotations["prometheus.kserve.io/path"]
        )
        seen["metrics"] = http("GET", metrics)[0]
        seen["grpc"] = grpc_infer(grpc_port)
    except Exception as exc:  # reported with the server's log rather than lost
        seen["error"] = repr(exc)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            seen["exit"] = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            seen["exit"] = "killed"
        log.close()
        seen["log_tail"] = (workdir / "server.log").read_text(errors="replace")[-4000:]
        print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
