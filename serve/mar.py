"""The archive layout both sides agree on: the manifest's path, model names, archive suffixes.

A leaf shared by the archiver (which writes archives) and serve.models.archive (which reads
them), so the two cannot drift apart.
"""

import re

MANIFEST = "MAR-INF/MANIFEST.json"
# what torch-model-archiver accepts as --model-name; matched whole (fullmatch)
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]*")
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip", ".model")
