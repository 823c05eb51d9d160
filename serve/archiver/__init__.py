"""Builds TorchServe model archives, as `torch-model-archiver` 0.12.0 does.

`python -m serve.archiver` (or `serve-archiver`) takes the same flags; `build_archive` is the
same step as a function. No torch is needed to build an archive.
"""

from serve.archiver.build import (
    ARCHIVE_FORMATS,
    ARCHIVER_VERSION,
    BUILTIN_HANDLERS,
    ArchiverError,
    ArchiveSpec,
    build_archive,
)

__all__ = [
    "ARCHIVER_VERSION",
    "ARCHIVE_FORMATS",
    "BUILTIN_HANDLERS",
    "ArchiveSpec",
    "ArchiverError",
    "build_archive",
]
