"""TorchServe's log files: `ts_log.log`, `model_log.log`, `access_log.log` under LOG_LOCATION,
`ts_metrics.log` and `model_metrics.log` under METRICS_LOCATION.

Written when either env var is set (the `torchserve` command sets LOG_LOCATION to `./logs`
when neither is), beside stderr, which keeps every line as before. The files get TorchServe's
layouts (log4j2's `%d{ISO8601} [%-5p] %t %c - %m`, and `%d{ISO8601} - %m` for the metric
files), so the readers of its files keep working:
- ts_log: every server line (the handlers' lines too, as TorchServe's root logger has them);
- model_log: the handlers' own loggers (any logger outside the server's packages) and
  `serve.backend` ("Backend received inference at: <epoch s>" per batch);
- access_log: the access log lines (serve.telemetry.access_log tees them here);
- ts_metrics: `Requests2XX.Count:1.0|#Level:Host|#hostname:<h>,timestamp:<s>` per response;
- model_metrics: each `context.metrics` value as
  `<name>.<unit>:<value>|#<Dim>:<v>,...|#hostname:<h>,timestamp:<s>`.

Records pass through a queue to one writer thread, so no file write runs on the event loop.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

LOG_ENV = "LOG_LOCATION"
METRICS_ENV = "METRICS_LOCATION"
DEFAULT_FOLDER = "logs"

BACKEND = "serve.backend"  # per-batch backend lines, TorchServe's MODEL_LOG
TS_METRICS = "TS_METRICS"  # TorchServe's log4j logger names
MODEL_METRICS = "MODEL_METRICS"
# loggers of the server itself; any other logger is a handler's (or its libraries')
_SERVER_LOGGERS = ("serve", "aiohttp", "grpclib", "asyncio", "uvloop", "concurrent", "py.")
_HOSTNAME = socket.gethostname()


class LogFiles:
    """The open files and the thread writing them; `close` writes what is queued."""

    def __init__(self, log_dir: Path, metrics_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.metrics_dir = metrics_dir
        self.access: TextIO = (log_dir / "access_log.log").open("a", encoding="utf-8")
        server = _file(log_dir / "ts_log.log", _server_line, _not_metric)
        model = _file(log_dir / "model_log.log", _server_line, _is_model)
        ts_metrics = _file(metrics_dir / "ts_metrics.log", _metric_line, _named(TS_METRICS))
        model_metrics = _file(
            metrics_dir / "model_metrics.log", _metric_line, _named(MODEL_METRICS)
        )
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._queue = logging.handlers.QueueHandler(records)
        self._listener = logging.handlers.QueueListener(
            records, server, model, ts_metrics, model_metrics, respect_handler_level=True
        )
        self._handlers = (server, model, ts_metrics, model_metrics)

    def start(self) -> None:
        """Route the records: the root logger's, and the metric loggers' (which stay off stderr)."""
        self._listener.start()
        logging.getLogger().addHandler(self._queue)
        for name in (TS_METRICS, MODEL_METRICS):
            metric_logger = logging.getLogger(name)
            metric_logger.propagate = False
            metric_logger.setLevel(logging.INFO)
            metric_logger.addHandler(self._queue)
        logging.getLogger(BACKEND).setLevel(logging.INFO)

    def close(self) -> None:
        """Write the queued records and close the files."""
        logging.getLogger().removeHandler(self._queue)
        for name in (TS_METRICS, MODEL_METRICS):
            logging.getLogger(name).removeHandler(self._queue)
        self._listener.stop()
        for handler in self._handlers:
            handler.close()
        self.access.close()


_active: LogFiles | None = None


def folders(env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[Path, Path] | None:
    """The log and metrics folders the env asks for, None when neither variable is set."""
    logs, metrics = env.get(LOG_ENV), env.get(METRICS_ENV)
    if not logs and not metrics:
        return None
    return Path(logs or DEFAULT_FOLDER).resolve(), Path(metrics or DEFAULT_FOLDER).resolve()


def install() -> LogFiles | None:
    """Start writing the files when LOG_LOCATION or METRICS_LOCATION is set.

    Without them the backend logger stays quiet: a line per batch on stderr would only be
    noise. The metric loggers are only written in `metrics_mode: log|legacy`, and then go to
    stderr like every other line.
    """
    global _active
    found = folders()
    if found is None:
        logging.getLogger(BACKEND).setLevel(logging.WARNING)
        return None
    _active = LogFiles(*found)
    _active.start()
    return _active


def uninstall(files: LogFiles | None) -> None:
    """Close `files` (from `install`)."""
    global _active
    if files is not None:
        files.close()
    _active = None


def access_file() -> TextIO | None:
    """access_log.log while the files are written, else None."""
    return None if _active is None else _active.access


def _file(
    path: Path, layout: logging.Formatter, keep: Callable[[logging.LogRecord], bool]
) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(layout)
    handler.addFilter(keep)
    return handler


class _Iso8601(logging.Formatter):
    """log4j2's ISO8601 date: `2024-01-31T12:00:00,123`."""

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s,%03d"

    def formatMessage(self, record: logging.LogRecord) -> str:
        """log4j2's level names: `WARN` (and `FATAL`) where Python says WARNING (CRITICAL)."""
        line = super().formatMessage(record)
        level = _LOG4J_LEVELS.get(record.levelname)
        return line if level is None else line.replace(f"[{record.levelname}]", level, 1)


_LOG4J_LEVELS = {"WARNING": "[WARN ]", "CRITICAL": "[FATAL]"}


_server_line = _Iso8601("%(asctime)s [%(levelname)-5s] %(threadName)s %(name)s - %(message)s")
_metric_line = _Iso8601("%(asctime)s - %(message)s")


def _named(name: str) -> Callable[[logging.LogRecord], bool]:
    return lambda record: record.name == name


def _not_metric(record: logging.LogRecord) -> bool:
    return record.name not in (TS_METRICS, MODEL_METRICS)


def _is_model(record: logging.LogRecord) -> bool:
    name = record.name
    return name == BACKEND or not (name == "root" or name.startswith(_SERVER_LOGGERS))
