"""Command line: `python -m serve --config serve.yaml [overrides]`.

Exit codes: 0 after a clean stop, 2 for a configuration error (named key, nothing bound).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from serve import __version__
from serve.config import Config, ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The CLI flags; each overrides the matching key of the config file."""
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve PyTorch models packaged as TorchServe archives (.mar, .tar.gz, folder).",
    )
    parser.add_argument(
        "--config",
        "--ts-config",
        type=Path,
        help="YAML config file (see README: Configuration). Without it, built-in defaults apply.",
    )
    parser.add_argument(
        "--model-store", help="folder holding model archives (config key model_store)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME=ARCHIVE",
        help="models to load at start: ARCHIVE, NAME=ARCHIVE, or 'all' (config key load_models)",
    )
    parser.add_argument(
        "--enable-model-api",
        action="store_true",
        default=None,
        help="allow registering and unregistering models over the management API",
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
        help="accepted for TorchServe compatibility; this server writes no config snapshots",
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
        values["load_models"] = list(args.models)
    if args.enable_model_api:
        values["enable_model_api"] = True
    if args.disable_token_auth:
        values["disable_token_authorization"] = True
    if args.ncs:
        values["no_config_snapshots"] = True
    if args.log_level is not None:
        values["log_level"] = args.log_level
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    args = parse_args(argv)
    try:
        config = load_config(args.config, overrides(args))
    except ConfigError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    return _run(config)


def _run(config: Config) -> int:
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
