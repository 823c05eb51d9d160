"""The gRPC APIs (TorchServe's inference.proto and management.proto) over grpclib."""

import sys


def _import_betterproto2() -> None:
    """Import betterproto2 without pydantic.

    betterproto2 imports pydantic whenever it is installed (it often is, beside KServe or
    FastAPI): 3 MB of RSS and ~20 ms of start, used only by messages generated as pydantic
    dataclasses, which ours are not. A `None` entry makes that optional import fail as if
    pydantic were absent; removed at once, so a handler importing pydantic later gets it.
    """
    if "betterproto2" in sys.modules or "pydantic" in sys.modules:
        return
    sys.modules["pydantic"] = None  # type: ignore[assignment]
    try:
        import betterproto2  # noqa: F401
    finally:
        del sys.modules["pydantic"]


_import_betterproto2()
