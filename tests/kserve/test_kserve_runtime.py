"""The shipped ServingRuntime runs as KServe would run it: its container command, args and env
as written (the image aside), against a folder mounted at /mnt/models laid out as KServe's
TorchServe documentation lays it out (config/config.properties, model-store/mnist.mar).

The server runs in private mount and network namespaces, so it binds the runtime's declared
ports and reads the absolute /mnt/models paths without touching the host's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.handlers import TS_DOUBLER

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"
KSERVE_CONFIG = ROOT / "deploy" / "kserve" / "config.properties"
POD_SCRIPT = Path(__file__).resolve().parent / "kserve_pod.py"


NAMESPACE_SETUP = "ip link set lo up && mount -t tmpfs tmpfs /mnt && mkdir /mnt/models"


def unshare_refusal() -> str | None:
    """Why private namespaces cannot be made here, or None when they can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "bash", "-c", NAMESPACE_SETUP],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot make mount+net namespaces (needs root/CAP_SYS_ADMIN): {probe.stderr}"
    return None


def mnt_models(root: Path) -> Path:
    """A folder laid out as KServe's storage initializer leaves /mnt/models for TorchServe."""
    models = root / "models"
    (models / "config").mkdir(parents=True)
    (models / "model-store").mkdir()
    shutil.copyfile(KSERVE_CONFIG, models / "config" / "config.properties")
    (root / "handler.py").write_text(textwrap.dedent(TS_DOUBLER))
    built = subprocess.run(
        [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", "mnist", "--version", "1.0",
            "--handler", str(root / "handler.py"),
            "--export-path", str(models / "model-store"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return models


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    refusal = unshare_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    root = tmp_path_factory.mktemp("kserve")
    models = mnt_models(root)
    work = root / "work"
    work.mkdir()
    # the image's stand-in: `python` is this interpreter and `serve` this checkout
    script = (
        f"{NAMESPACE_SETUP} && mount --bind {models} /mnt/models && "
        f"export PATH={Path(sys.executable).parent}:$PATH PYTHONPATH={ROOT} && "
        f"python {POD_SCRIPT} {RUNTIME} {work}"
    )
    ran = subprocess.run(
        ["unshare", "--mount", "--net", "bash", "-c", script],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    seen: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    assert "error" not in seen, f"{seen['error']}\n{seen['log_tail']}"
    return seen


def container() -> dict[str, Any]:
    runtime = yaml.safe_load(RUNTIME.read_text())
    first: dict[str, Any] = runtime["spec"]["containers"][0]
    return first


def test_the_command_is_the_runtimes_and_reads_mnt_models(pod: dict[str, Any]) -> None:
    spec = container()
    assert pod["command"] == spec["command"] + spec["args"]
    assert "--model-store=/mnt/models/model-store" in pod["command"]
    assert "--ts-config=/mnt/models/config/config.properties" in pod["command"]


def test_both_probes_answer_200_once_ready(pod: dict[str, Any]) -> None:
    assert pod["ready_status"] == 200, pod["log_tail"]
    assert pod["probes"] == {"livenessProbe": 200, "readinessProbe": 200, "startupProbe": 200}


def test_v1_predict_on_the_declared_http_port(pod: dict[str, Any]) -> None:
    assert pod["v1"] == [200, {"predictions": [[2.0, 4.0]]}], pod["log_tail"]


def test_v2_rest_infer_and_an_unknown_model(pod: dict[str, Any]) -> None:
    status, body = pod["v2"]
    assert status == 200, pod["log_tail"]
    assert body["id"] == "rest-1"
    assert body["outputs"][0]["data"] == [2.0, 5.0]
    status, body = pod["v2_unknown"]
    assert status == 404
    assert "nope" in json.dumps(body)


def test_v2_grpc_infer_on_the_runtimes_grpc_port(pod: dict[str, Any]) -> None:
    grpc = pod["grpc"]
    assert grpc["id"] == "grpc-1"
    assert grpc["outputs"] == [{"name": "a", "shape": [4], "data": [2.0, 4.0, 6.0, 8.0]}]
    assert grpc["live"] is True
    assert grpc["ready"] is True


def test_metrics_where_the_prometheus_annotations_point(pod: dict[str, Any]) -> None:
    assert pod["metrics"] == 200


def test_sigterm_stops_the_server_cleanly(pod: dict[str, Any]) -> None:
    assert pod["exit"] == 0, pod["log_tail"]


def test_the_runtime_declares_one_port_and_probes_it() -> None:
    """Knative (KServe's Serverless mode) admits one container port; probes must use it."""
    spec = container()
    assert [(p["name"], p["containerPort"]) for p in spec["ports"]] == [("http1", 8080)]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["port"] == 8080
    assert "--grpc-inference-address=0.0.0.0:8081" in spec["args"]
