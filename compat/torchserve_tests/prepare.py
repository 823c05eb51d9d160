"""A scratch copy of a pytorch/serve checkout that its tests can run from, offline.

The checkout itself is never written to: the copy gets what a snapshot of the repository
lacks (the mnist weights, the gRPC client stubs) and a `mar_config.json` trimmed to its one
local model, so `marsgen` needs no internet. The one download: the wheels of the stateful
example's requirements (lru-dict), fetched here into a wheelhouse because the tests run in a
network namespace where the servers' per-model `pip install` cannot reach PyPI.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

# the same blob in a full clone: a state dict of examples/image_classifier/mnist/mnist.py's Net
WEIGHTS = ("examples/image_classifier/mnist/mnist_cnn.pt", "examples/stateful/model_cnn.pt")
MNIST_MODULE = "examples/image_classifier/mnist/mnist.py"
MAR_CONFIG = "ts_scripts/mar_config.json"
PROTO_DIR = "frontend/server/src/main/resources/proto"
# google/rpc/status.proto is a submodule (third_party/google/rpc) a snapshot lacks; this
# project keeps the same file for its own stubs
OUR_PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"
# the gRPC tests import the stubs as top-level modules from here (tsutils puts them there)
STUBS_DIR = "ts_scripts"
# the requirements the servers pip-install per model (install_py_dep_per_model=true in
# test/config_ts.properties), and the folder of their wheels that pip reads offline
REQUIREMENTS = ("examples/stateful/requirements.txt",)
WHEELHOUSE = ".compat-wheels"


class PrepareError(Exception):
    """The checkout cannot be used: what is missing."""


def check_checkout(repo: Path) -> None:
    """Fail early on a path that is not a pytorch/serve checkout."""
    for needed in ("test/pytest/test_utils.py", "ts/launcher.py", MNIST_MODULE, PROTO_DIR):
        if not (repo / needed).exists():
            raise PrepareError(f"{repo} is not a pytorch/serve checkout: no {needed}")


def scratch_copy(repo: Path, dest: Path) -> Path:
    """Copy the checkout (without .git) to `dest`, replacing an earlier copy."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(repo, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    return dest


def write_untrained_weights(copy: Path) -> list[str]:
    """An untrained, seeded state dict of the mnist `Net` where the real weights are missing.

    It serves the tests that never check a prediction; those that do fail honestly.
    Returns the paths written.
    """
    missing = [rel for rel in WEIGHTS if not (copy / rel).is_file()]
    if not missing:
        return []
    import torch  # the runner's own process; the server under test never sees this

    spec = importlib.util.spec_from_file_location("mnist_net", copy / MNIST_MODULE)
    if spec is None or spec.loader is None:
        raise PrepareError(f"cannot load {MNIST_MODULE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    state = module.Net().state_dict()
    for rel in missing:
        torch.save(state, copy / rel)
    return missing


def trim_mar_config(copy: Path) -> None:
    """Keep only mnist (the one local model) in marsgen's list: the others are downloads."""
    path = copy / MAR_CONFIG
    entries = json.loads(path.read_text())
    path.write_text(json.dumps([e for e in entries if e["model_name"] == "mnist"], indent=2))


def grpc_stubs(copy: Path) -> None:
    """Generate the Python gRPC client stubs the gRPC tests import (grpcio-tools)."""
    rpc_include = copy / "third_party/google/rpc"
    include = rpc_include if (rpc_include / "google/rpc/status.proto").exists() else OUR_PROTO_DIR
    out = copy / STUBS_DIR
    protos = [str(copy / PROTO_DIR / name) for name in ("inference.proto", "management.proto")]
    protoc = [sys.executable, "-m", "grpc_tools.protoc"]
    # status.proto too: its module (googleapis-common-protos) is not installed here
    status = [
        *protoc,
        f"-I{include}",
        f"--python_out={out}",
        str(include / "google/rpc/status.proto"),
    ]
    stubs = [
        *protoc,
        # TorchServe's protos first: ours (same names) must not shadow them
        f"--proto_path={copy / PROTO_DIR}",
        f"--proto_path={include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    for cmd in (status, stubs):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PrepareError(f"generating the gRPC stubs failed: {done.stderr.strip()}")


def prepare(repo: Path, dest: Path) -> list[str]:
    """The scratch copy at `dest`, ready to run; returns the weights files it had to make."""
    check_checkout(repo)
    copy = scratch_copy(repo, dest)
    made = write_untrained_weights(copy)
    trim_mar_config(copy)
    grpc_stubs(copy)
    wheelhouse(copy)
    return made


def wheelhouse(copy: Path) -> Path:
    """Download the wheels of the examples' requirements into the copy (PyPI must be reachable).

    Both servers run the same Python minor version as this process, so one set of wheels serves
    both sides.
    """
    folder = copy / WHEELHOUSE
    folder.mkdir(exist_ok=True)
    for rel in REQUIREMENTS:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            str(folder),
            "-r",
            str(copy / rel),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PrepareError(f"cannot download the wheels of {rel}: {done.stderr.strip()[-400:]}")
    return folder
