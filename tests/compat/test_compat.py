"""TorchServe's import names: served from our package, unless the real TorchServe is there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ALIASED = """
import handlers.base, handlers.context, handlers.errors, handlers.metrics
from handlers import compat
assert compat.install()
from ts.torch_handler.base_handler import BaseHandler
from ts.context import Context
from ts.utils.util import PredictionException
from ts.metrics.metric_type_enum import MetricTypes
import ts.utils.util
assert BaseHandler is handlers.base.BaseHandler
assert Context is handlers.context.Context
assert PredictionException is handlers.errors.PredictionException
assert MetricTypes is handlers.metrics.MetricTypes
assert ts.utils.util.__spec__.name == "handlers.ts.utils.util"
print("aliased")
"""

REAL = """
from handlers import compat
assert not compat.install()
import ts
print(ts.WHO)
"""


def _python(code: str, cwd: Path, extra_path: Path | None = None) -> str:
    env = {"PYTHONPATH": str(extra_path)} if extra_path else {}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_ts_names_are_our_modules_when_torchserve_is_absent(tmp_path: Path) -> None:
    assert _python(ALIASED, tmp_path) == "aliased"


def test_a_real_torchserve_is_never_shadowed(tmp_path: Path) -> None:
    fake = tmp_path / "site"
    (fake / "ts").mkdir(parents=True)
    (fake / "ts" / "__init__.py").write_text('WHO = "the real torchserve"\n')
    assert _python(REAL, tmp_path, extra_path=fake) == "the real torchserve"
