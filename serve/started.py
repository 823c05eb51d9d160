"""The start-up announcement: TorchServe's "Model server started." line, and the launcher's cue.

TorchServe's scripts and test harness wait for that line on the server's output. The
`torchserve` command (serve.torchserve_cli) waits on a pipe instead: it names the pipe's write
end in SERVE_READY_FD, and the server writes one line to it once every API is bound.
"""

from __future__ import annotations

import contextlib
import logging
import os

READY_FD_ENV = "SERVE_READY_FD"
LINE = "Model server started."

logger = logging.getLogger(__name__)


def announce() -> None:
    """Log the line and tell a waiting launcher (once; the env var is removed)."""
    logger.info("%s", LINE)
    fd = os.environ.pop(READY_FD_ENV, None)
    if not fd:
        return
    with contextlib.suppress(OSError, ValueError):  # the launcher gave up waiting: no one reads
        os.write(int(fd), b"started\n")  # a few bytes into a pipe: never blocks
        os.close(int(fd))
