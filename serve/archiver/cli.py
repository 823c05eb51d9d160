"""`serve-archiver` / `python -m serve.archiver`: torch-model-archiver 0.12.0's command line.

Exit codes: 0 when the archive was written; 2 for a bad input or an output that cannot be
written, with one `serve-archiver: error: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from serve.archiver.build import (
    ARCHIVE_FORMATS,
    RUNTIMES,
    ArchiverError,
    ArchiveSpec,
    build_archive,
)

PROG = "serve-archiver"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error as one line (argparse would print the whole usage first)."""
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    """The flags, names and defaults of torch-model-archiver 0.12.0."""
    p = _Parser(
        prog=PROG,
        description="Package a model as a TorchServe archive (.mar, .tar.gz or a folder).",
    )
    p.add_argument(
        "--model-name",
        required=True,
        help="model name; the archive is <model-name>.mar (pattern ^[A-Za-z0-9][A-Za-z0-9_\\-.]*$)",
    )
    p.add_argument(
        "--serialized-file",
        help="weights: a state_dict .pt/.pth (eager mode, with --model-file), TorchScript .pt, "
        ".pt2 or .onnx",
    )
    p.add_argument(
        "--model-file", help="python file defining exactly one nn.Module class (eager mode)"
    )
    p.add_argument(
        "--handler",
        required=True,
        help="a built-in handler name (image_classifier, ...) or path/to/handler.py[:function]",
    )
    p.add_argument(
        "--extra-files",
        help="comma-separated files, folders (their contents go to the archive root) or globs",
    )
    p.add_argument("--runtime", default="python", choices=RUNTIMES, help="default: python")
    p.add_argument(
        "--export-path",
        default=os.getcwd(),
        help="folder to write the archive into (default: the current folder)",
    )
    p.add_argument(
        "--archive-format",
        default="default",
        choices=list(ARCHIVE_FORMATS),
        help="default: deflated .mar; zip-store: stored .mar; tgz: .tar.gz; "
        "no-archive: a folder <export-path>/<model-name>",
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="overwrite an existing archive of that name"
    )
    p.add_argument("-v", "--version", required=True, help="model version (modelVersion)")
    p.add_argument(
        "-r",
        "--requirements-file",
        help="requirements.txt installed per model when the server sets install_py_dep_per_model",
    )
    p.add_argument("-c", "--config-file", help="model-config.yaml (batchSize, handler: ...)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build one archive; returns the exit code."""
    args = parser().parse_args(argv)
    spec = ArchiveSpec(
        model_name=args.model_name,
        version=args.version,
        handler=args.handler,
        serialized_file=args.serialized_file,
        model_file=args.model_file,
        extra_files=args.extra_files,
        runtime=args.runtime,
        export_path=args.export_path,
        archive_format=args.archive_format,
        force=args.force,
        requirements_file=args.requirements_file,
        config_file=args.config_file,
    )
    try:
        output = build_archive(spec)
    except ArchiverError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"cannot write the archive{where}: {exc.strerror or exc}")
    print(output)
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2
