"""The committed gRPC code (serve/grpc/gen) is what `make proto` generates from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.server import REPO

GENERATED = REPO / "serve" / "grpc" / "gen"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            f"--python_betterproto2_out={tmp_path}",
            "--python_betterproto2_opt=client_generation=async,server_generation=async",
            "proto/inference.proto",
            "proto/management.proto",
            "proto/grpc_predict_v2.proto",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh, committed = _files(tmp_path), _files(GENERATED)
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit serve/grpc/gen"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit serve/grpc/gen"


def test_make_proto_runs_this_generator() -> None:
    """`make proto` exists and passes protoc the options checked above."""
    dry = subprocess.run(
        ["make", "-n", "proto"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    assert "grpc_tools.protoc -I proto" in dry
    assert "--python_betterproto2_opt=client_generation=async,server_generation=async" in dry
    assert "proto/inference.proto proto/management.proto proto/grpc_predict_v2.proto" in dry
