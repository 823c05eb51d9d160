"""Command line: `python -m serve --config serve.yaml [overrides]`.

Exit codes: 0 after a clean stop, 2 for a configuration error (named key, nothing bound).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from serve import __version__
from serve.config import Config, ConfigError, load_config
from serve.config.torchserve import load_ts_config
from serve.snapshots import latest, snapshot_folder
from serve.telemetry import log_files
from serve.workers.startup import defer_full_collections

_ADDRESS_FLAGS = {
    "inference_address": "inference API",
    "management_address": "management API",
    "metrics_address": "metrics API",
    "grpc_inference_address": "gRPC inference API",
    "grpc_management_address": "gRPC management API",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The CLI flags; each overrides the matching key of the config file."""
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve PyTorch models packaged as TorchServe archives (.mar, .tar.gz, folder).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config file (see README: Configuration). Without it, built-in defaults apply.",
    )
    parser.add_argument(
        "--ts-config",
        type=Path,
        help="TorchServe config.properties file instead of --config (also env TS_CONFIG_FILE)",
    )
    parser.add_argument(
        "--model-store", help="folder holding model archives (config key model_store)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME=ARCHIVE",
        help="models to load at start: ARCHIVE, NAME=ARCHIVE, or 'all'; each item may be a "
        "comma-separated list, as with TorchServe (config key load_models)",
    )
    parser.add_argument(
        "--enable-model-api",
        action="store_true",
        default=None,
        help="allow registering and unregistering models over the management API",
    )
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="accepted for TorchServe compatibility; the server always runs in the foreground",
    )
    parser.add_argument(
        "--start",
        action="store_true",
        help="accepted for TorchServe compatibility; starting is what this command does",
    )
    parser.add_argument(
        "--disable-token-auth",
        "--dt",
        action="store_true",
        default=None,
        help="turn token authorization off: every API answers without a key "
        "(config key disable_token_authorization)",
    )
    parser.add_argument(
        "--ncs",
        "--no-config-snapshots",
        action="store_true",
        default=None,
        help="no config snapshots: neither restore the newest one nor write any",
    )
    for key, what in _ADDRESS_FLAGS.items():
        parser.add_argument(
            "--" + key.replace("_", "-"),
            metavar="HOST:PORT",
            help=f"{what} address, overriding the config file's {key}",
        )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (config key log_level)")
    parser.add_argument("--version", action="version", version=f"serve {__version__}")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config keys set on the command line."""
    values: dict[str, Any] = {}
    if args.model_store is not None:
        values["model_store"] = str(Path(args.model_store).resolve())
    if args.models is not None:
        values["load_models"] = split_models(args.models)
    if args.enable_model_api:
        values["enable_model_api"] = True
    if args.disable_token_auth:
        values["disable_token_authorization"] = True
    if args.ncs:
        values["no_config_snapshots"] = True
    if args.log_level is not None:
        values["log_level"] = args.log_level
    for key in _ADDRESS_FLAGS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return values


def split_models(items: list[str]) -> list[str]:
    """`--models a.mar,b.mar c=d.mar` as TorchServe's server reads it: commas separate too."""
    return [model.strip() for item in items for model in item.split(",") if model.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    args = parse_args(argv)
    try:
        config, warnings, ts_config = _load(args)
    except ConfigError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    files = log_files.install()
    try:
        for warning in warnings:
            logging.getLogger("serve").warning("%s", warning)
        if ts_config is None and not config.no_config_snapshots:
            config = _restore_snapshot(config)
        return _run(config)
    finally:
        log_files.uninstall(files)


def _load(args: argparse.Namespace) -> tuple[Config, list[str], Path | None]:
    """The Config, the warnings to log, and the config.properties file read (if any).

    A properties file comes from --ts-config, else env TS_CONFIG_FILE; it and --config are
    two forms of one configuration, so giving both is an error.
    """
    env_file = os.environ.get("TS_CONFIG_FILE")
    ts_config = args.ts_config or (Path(env_file) if env_file else None)
    if ts_config is None:
        return load_config(args.config, overrides(args)), [], None
    if args.config is not None:
        which = "--ts-config" if args.ts_config else "TS_CONFIG_FILE"
        raise ConfigError(which, "give either --config (YAML) or a config.properties, not both")
    config, warnings = load_ts_config(ts_config, overrides(args))
    return config, warnings, ts_config


def _restore_snapshot(config: Config) -> Config:
    """The newest readable snapshot's models replace load_models (TorchServe's rule)."""
    folder = snapshot_folder(config)
    found = latest(folder)
    if found is None:
        return config
    count = sum(len(versions) for versions in found.models.values())
    logging.getLogger("serve").info(
        "Restoring %d model version(s) from config snapshot %s (load_models is not used; "
        "--ncs ignores snapshots, deleting %s starts clean)",
        count,
        found.path,
        folder,
    )
    return dataclasses.replace(config, model_snapshot=found.models, load_models=())


def _run(config: Config) -> int:
    defer_full_collections()  # serve() restores them once start-up is over
    from serve.app import serve, startup_models

    try:
        startup_models(config)
    except ConfigError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # uvloop is not available on this platform
        runner = asyncio.run
    try:
        runner(serve(config))
    except ConfigError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
