"""Handler files load as private modules per executor thread, and leave with the thread.

The soak benchmark found the leak this guards against: 7,106 register/unregister cycles took
the server from 252 to 504 MB, one handler module per executor left in sys.modules.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from handlers.util import forget_private_modules, load_private_module


def test_a_thread_forgets_the_private_modules_it_loaded(tmp_path: Path) -> None:
    source = tmp_path / "handler.py"
    source.write_text("VALUE = 42\n")
    loaded: list[str] = []
    seen_while_running: list[bool] = []

    def executor() -> None:
        module = load_private_module(source, "handler")
        loaded.append(module.__name__)
        seen_while_running.append(module.__name__ in sys.modules)
        forget_private_modules()

    other = load_private_module(source, "handler")  # this thread's: not the executor's to drop
    thread = threading.Thread(target=executor)
    thread.start()
    thread.join()

    assert seen_while_running == [True]
    assert loaded[0] not in sys.modules
    assert other.__name__ in sys.modules
    assert other.VALUE == 42
    forget_private_modules()
    assert other.__name__ not in sys.modules
