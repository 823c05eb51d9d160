"""What goes into an archive: validated inputs, the member list, and MANIFEST.json.

The rules are torch-model-archiver 0.12.0's (model_packaging_utils.py), so an archive built
from the same inputs has the same members and the same manifest keys:
- every artifact lands flat in the archive root under its base name; a folder given in
  `--extra-files` contributes its *contents* (subfolders kept); a later artifact replaces an
  earlier one of the same name (order: model file, serialized file, handler, extra files,
  requirements file, config file);
- below a folder, subfolders named `__pycache__`, `__MACOSX` or starting with `.` are skipped;
  files are not filtered (the real tool never applies its file filter);
- a built-in handler name is recorded but not copied; `path/h.py[:fn]` copies `h.py`.
Unlike the real tool, every input is checked before anything is written, and the output is
written to a temporary name and renamed, so a failure never leaves a partial archive.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from serve.archiver.writers import write_archive
from serve.mar import MANIFEST, MODEL_NAME_PATTERN, TORCHSERVE_VERSION

ARCHIVER_VERSION = TORCHSERVE_VERSION
ARCHIVE_FORMATS = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
RUNTIMES = ("python", "python3", "LSP")
# torch-model-archiver's list: these names are recorded in the manifest and never copied.
BUILTIN_HANDLERS = (
    "base_handler",
    "text_classifier",
    "image_classifier",
    "object_detector",
    "image_segmenter",
    "dali_image_classifier",
    "vllm_handler",
    "trt_llm_handler",
    "text_generation",  # ours (handlers.text_generation); TorchServe has no such built-in
)
_LSP_BUILTINS = ("BaseHandler", "TorchScriptHandler")
_SKIPPED_DIRS = ("__MACOSX", "__pycache__")

Warn = Callable[[str], None]


class ArchiverError(Exception):
    """An input or output problem; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """The inputs of one archive, named as torch-model-archiver's flags."""

    model_name: str
    version: str
    handler: str
    serialized_file: str | None = None
    model_file: str | None = None
    extra_files: str | None = None
    runtime: str = "python"
    export_path: str = "."
    archive_format: str = "default"
    force: bool = False
    requirements_file: str | None = None
    config_file: str | None = None

    @property
    def output(self) -> Path:
        """The archive file (or folder, for no-archive) this spec produces."""
        suffix = ARCHIVE_FORMATS[self.archive_format]
        return Path(self.export_path) / f"{self.model_name}{suffix}"


def build_archive(spec: ArchiveSpec, warn: Warn | None = None) -> Path:
    """Check the inputs, then write the archive; returns its path. Raises ArchiverError."""
    warn = warn or _print_warning
    check_spec(spec)
    members = collect_members(spec, warn)
    if spec.output.exists():
        warn(f"overwriting {spec.output}")
    write_archive(spec.output, spec.archive_format, members, manifest_json(spec), spec.model_name)
    return spec.output


def check_spec(spec: ArchiveSpec) -> None:
    """The checks that need no file contents: name, version, runtime, format, output."""
    if not MODEL_NAME_PATTERN.fullmatch(spec.model_name):
        raise ArchiverError(
            f"invalid --model-name {spec.model_name!r}: it must match "
            r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$"
        )
    if ".." in spec.model_name:
        raise ArchiverError(
            f"invalid --model-name {spec.model_name!r}: '..' is refused by the server"
        )
    if not spec.version.strip():
        raise ArchiverError("--version must not be empty")
    if spec.runtime not in RUNTIMES:
        raise ArchiverError(f"invalid --runtime {spec.runtime!r}: use one of {', '.join(RUNTIMES)}")
    if spec.archive_format not in ARCHIVE_FORMATS:
        raise ArchiverError(
            f"invalid --archive-format {spec.archive_format!r}: "
            f"use one of {', '.join(ARCHIVE_FORMATS)}"
        )
    if not spec.handler.strip():
        raise ArchiverError("--handler must not be empty")
    if not Path(spec.export_path).is_dir():
        raise ArchiverError(f"--export-path {spec.export_path} is not a folder")
    if spec.output.exists() and not spec.force:
        raise ArchiverError(f"{spec.output} already exists; pass -f/--force to overwrite it")


def collect_members(spec: ArchiveSpec, warn: Warn) -> dict[str, Path]:
    """Archive member name → source file, in the real tool's copy order (later names win)."""
    members: dict[str, Path] = {}

    def add(name: str, source: Path) -> None:
        if name == MANIFEST:
            warn(f"skipping {source}: the archiver writes {MANIFEST} itself")
            return
        previous = members.pop(name, None)
        if previous is not None and previous.resolve() != source.resolve():
            warn(f"{source} replaces {previous} as {name} in the archive")
        members[name] = source

    for flag, value in (
        ("--model-file", spec.model_file),
        ("--serialized-file", spec.serialized_file),
    ):
        if value:
            source = _existing_file(flag, value)
            add(source.name, source)
    handler_file = _handler_file(spec.handler, spec.runtime)
    if handler_file is not None:
        add(handler_file.name, handler_file)
    for name, source in _extra_files(spec.extra_files, spec.output, warn):
        add(name, source)
    for flag, value in (
        ("-r/--requirements-file", spec.requirements_file),
        ("-c/--config-file", spec.config_file),
    ):
        if value:
            source = _existing_file(flag, value)
            add(source.name, source)
    return members


def manifest_json(spec: ArchiveSpec, now: datetime | None = None) -> str:
    """MANIFEST.json text with exactly torch-model-archiver's keys, in its order and layout."""
    model: dict[str, str] = {"modelName": spec.model_name}
    if spec.serialized_file:
        model["serializedFile"] = os.path.basename(spec.serialized_file)
    model["handler"] = os.path.basename(spec.handler)
    if spec.model_file:
        model["modelFile"] = spec.model_file.split("/")[-1]
    model["modelVersion"] = spec.version
    if spec.requirements_file:
        model["requirementsFile"] = spec.requirements_file.split("/")[-1]
    if spec.config_file:
        model["configFile"] = os.path.basename(spec.config_file)
    manifest = {
        "createdOn": (now or datetime.now()).strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": spec.runtime,
        "model": model,
        "archiverVersion": ARCHIVER_VERSION,
    }
    return json.dumps(manifest, indent=2)


def _existing_file(flag: str, value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise ArchiverError(f"{flag}: no such file: {value}")
    if not path.is_file():
        raise ArchiverError(f"{flag}: {value} is not a file")
    return path


def _handler_file(handler: str, runtime: str) -> Path | None:
    """The file a handler argument copies into the archive (None for a built-in handler)."""
    if runtime == "LSP":
        if handler in _LSP_BUILTINS:
            return None
        suffix = ".dylib" if sys.platform.startswith("darwin") else ".so"
        return _existing_file("--handler", handler.split(":")[0] + suffix)
    if handler in BUILTIN_HANDLERS:
        return None
    module = handler.split(":")[0]
    if not module.endswith(".py"):
        module += ".py"
    path = Path(module)
    if not path.is_file():
        raise ArchiverError(
            f"--handler {handler!r} is neither a built-in handler "
            f"({', '.join(BUILTIN_HANDLERS)}) nor an existing file path/to/handler.py[:function]"
        )
    return path


def _extra_files(value: str | None, output: Path, warn: Warn) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if not value:
        return found
    skip = output.resolve()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        wildcard = glob.has_magic(item)
        if not wildcard and not Path(item).exists():
            raise ArchiverError(f"--extra-files: no such file or folder: {item}")
        matches = sorted(glob.glob(item))
        if wildcard and not matches:
            warn(f"--extra-files: pattern {item!r} matched no file")
        for match in map(Path, matches):
            if match.resolve() == skip:
                continue
            if match.is_file():
                found.append((match.name, match))
            elif match.is_dir():
                found.extend(_folder_contents(match, skip))
            else:
                raise ArchiverError(f"--extra-files: {match} is neither a file nor a folder")
    return found


def _folder_contents(folder: Path, skip: Path) -> list[tuple[str, Path]]:
    """A folder's files as archive names relative to it, skipping cache and hidden folders.

    Linked folders are followed (the real tool copies them), each real folder once; the
    output itself is skipped when it lies inside the folder.
    """
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = Path(root).resolve()
        if real in seen or real == skip:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if path.resolve() == skip or not path.is_file():
                continue
            found.append((path.relative_to(folder).as_posix(), path))
    return found


def _print_warning(message: str) -> None:
    print(f"serve-archiver: warning: {message}", file=sys.stderr)
