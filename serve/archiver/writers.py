"""Writing an archive in one of the four formats, atomically, with progress on large files.

Layouts are torch-model-archiver's: zip members at the root plus `MAR-INF/MANIFEST.json`;
tgz members under one top-level `<model_name>/` folder; no-archive a plain folder.
The output is written under a temporary name beside it and renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, TextIO

from serve.mar import MANIFEST

LARGE_FILE = 32 * 2**20
_CHUNK = 2**20


class Progress:
    """Shows `name: NN%` on a terminal while a large file is copied; silent otherwise."""

    def __init__(self, stream: TextIO | None, threshold: int = LARGE_FILE) -> None:
        self.stream = stream
        self.threshold = threshold
        self.enabled = stream is not None and stream.isatty()

    def reader(self, raw: BinaryIO, size: int, label: str) -> BinaryIO:
        """`raw`, reporting progress as it is read when the file is large enough."""
        if not self.enabled or size < self.threshold or self.stream is None:
            return raw
        return _ProgressReader(raw, size, label, self.stream)  # type: ignore[return-value]


class _ProgressReader:
    def __init__(self, raw: BinaryIO, size: int, label: str, stream: TextIO) -> None:
        self._raw = raw
        self._size = max(size, 1)
        self._label = label
        self._stream = stream
        self._done = 0
        self._shown = -1

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._done += len(data)
        percent = min(100, self._done * 100 // self._size)
        if percent != self._shown:
            self._shown = percent
            end = "\n" if percent == 100 else ""
            self._stream.write(f"\radding {self._label}: {percent:3d}%{end}")
            self._stream.flush()
        return data


def write_archive(
    output: Path,
    archive_format: str,
    members: Mapping[str, Path],
    manifest: str,
    model_name: str,
    progress: Progress | None = None,
) -> None:
    """Write `members` and the manifest to `output`, replacing it only once complete."""
    progress = progress or Progress(sys.stderr)
    output.parent.mkdir(parents=True, exist_ok=True)
    if archive_format == "no-archive":
        _write_folder(output, members, manifest, progress)
        return
    tmp = _partial(output)
    try:
        if archive_format == "tgz":
            _write_tgz(tmp, members, manifest, model_name, progress)
        else:
            stored = archive_format == "zip-store"
            _write_zip(tmp, members, manifest, stored, progress)
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _write_zip(
    path: Path, members: Mapping[str, Path], manifest: str, stored: bool, progress: Progress
) -> None:
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, source in sorted(members.items()):
            info = zipfile.ZipInfo.from_file(source, name, strict_timestamps=False)
            info.compress_type = compression
            with source.open("rb") as raw, archive.open(info, "w") as out:
                shutil.copyfileobj(progress.reader(raw, info.file_size, name), out, _CHUNK)
        archive.writestr(MANIFEST, manifest)


def _write_tgz(
    path: Path, members: Mapping[str, Path], manifest: str, model_name: str, progress: Progress
) -> None:
    # dereference: a linked file is stored as the file, as the real tool's staged copy is
    with tarfile.open(path, "w:gz", dereference=True) as archive:
        for name, source in sorted(members.items()):
            info = archive.gettarinfo(str(source), arcname=f"{model_name}/{name}")
            with source.open("rb") as raw:
                archive.addfile(info, progress.reader(raw, info.size, name))
        data = manifest.encode("utf-8")
        info = tarfile.TarInfo(f"{model_name}/{MANIFEST}")
        info.size = len(data)
        info.mtime = int(time.time())
        archive.addfile(info, BytesIO(data))


def _write_folder(
    output: Path, members: Mapping[str, Path], manifest: str, progress: Progress
) -> None:
    tmp = _partial(output)
    tmp.mkdir()
    try:
        for name, source in members.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            size = source.stat().st_size
            with source.open("rb") as raw, target.open("wb") as out:
                shutil.copyfileobj(progress.reader(raw, size, name), out, _CHUNK)
            shutil.copystat(source, target)
        (tmp / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (tmp / MANIFEST).write_text(manifest, encoding="utf-8")
        _replace_folder(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _partial(output: Path) -> Path:
    """A free name beside `output` (not mkstemp: the result keeps the umask's permissions)."""
    path = output.parent / f".{output.name}.{os.getpid()}.partial"
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    return path


def _replace_folder(new: Path, output: Path) -> None:
    """Move `new` to `output`; an old output is moved aside first and deleted after."""
    if not output.exists() and not output.is_symlink():
        os.replace(new, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
    aside = old / "previous"
    os.replace(output, aside)
    try:
        os.replace(new, output)
    except BaseException:
        os.replace(aside, output)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
