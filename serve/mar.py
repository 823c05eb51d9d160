"""The archive layout both sides agree on: the manifest's path, model names, archive suffixes.

A leaf shared by the archiver (which writes archives) and serve.models.archive (which reads
them), so the two cannot drift apart.
"""

import re

MANIFEST = "MAR-INF/MANIFEST.json"
# what torch-model-archiver accepts as --model-name; matched whole (fullmatch)
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]*")
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip", ".model")
# the TorchServe release whose archives (archiverVersion) and command this project keeps;
# the handler side's copy is handlers.ts.__version__ (handlers import nothing from serve)
TORCHSERVE_VERSION = "0.12.0"
