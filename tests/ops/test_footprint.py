"""What a serving process holds beyond torch and the models: no pydantic unless a handler wants it.

betterproto2 imports pydantic whenever it is installed (3 MB of RSS); serve.grpc imports
betterproto2 without it. The check reads the live server's memory map: pydantic's compiled
core is mapped iff pydantic was imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.helpers.clients import http
from tests.helpers.server import model_folder, serving

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps"),
    pytest.mark.skipif(
        importlib.util.find_spec("pydantic") is None, reason="pydantic is not installed"
    ),
]

# imports pydantic on its first request, as a handler that validates with it would
PYDANTIC_HANDLER = """
    def handle(data, context):
        if data is None:
            return None
        import pydantic

        return [pydantic.VERSION for _ in data]
"""


def _maps_pydantic(pid: int) -> bool:
    return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_pydantic_is_not_loaded_by_the_server_but_a_handler_can_import_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    model_folder(store, "pyd", PYDANTIC_HANDLER)
    with serving(tmp_path / "run", store=store, load=["pyd"]) as server:
        assert server.process is not None
        pid = server.process.pid
        assert not _maps_pydantic(pid)
        status, body = http("POST", server.inference + "/predictions/pyd", b"x")
        assert status == 200, body
        import pydantic

        assert body.decode() == pydantic.VERSION
        assert _maps_pydantic(pid)
