"""TorchServe's import names (`ts.*`) for handlers written against TorchServe.

When no real `ts` package is importable, `install()` puts a finder first on `sys.meta_path`
that serves every `ts.X` name as the very module `handlers.ts.X`, so `ts.utils.util.
PredictionException` is the class the server catches. When TorchServe itself is installed
nothing is aliased and its own modules are used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

_PREFIX = "handlers."
_lock = threading.Lock()
_installed = False


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target
        self._original_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._original_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias spec on the shared module; give it its own back
        module.__spec__ = self._original_spec


class _TsAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ts" and not fullname.startswith("ts."):
            return None
        real = importlib.util.find_spec(_PREFIX + fullname)
        if real is None:
            return None
        return importlib.util.spec_from_loader(
            fullname,
            _AliasLoader(_PREFIX + fullname),
            is_package=real.submodule_search_locations is not None,
        )


def install() -> bool:
    """Serve `ts.*` from `handlers.ts` unless a real TorchServe is importable; True if aliased."""
    global _installed
    with _lock:
        if _installed:
            return True
        if "ts" in sys.modules or importlib.util.find_spec("ts") is not None:
            return False
        sys.meta_path.insert(0, _TsAliasFinder())
        _installed = True
        return True
