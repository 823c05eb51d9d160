"""Per-model Python requirements: the archive's `requirementsFile`, pip-installed for it alone.

With `install_py_dep_per_model: true` the requirements go into a folder the model version owns
(`pip install --target`), which its handler finds first on `sys.path`. Without it, an archive
that ships requirements is loaded anyway, with a warning (TorchServe's behaviour). pip runs as
a subprocess awaited on the loop, so the loop never blocks. A failed install fails the
registration with 400 InvalidModelException and pip's last lines, as TorchServe answers a
failed dependency install with a 400 ModelException.

All models share one Python process: a package a model installs can only be imported if no
other copy of it was imported first, and it can shadow another model's copy imported later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath

from serve.errors import InvalidModel
from serve.models.archive import ModelArchive

logger = logging.getLogger(__name__)

DEPS_PREFIX = ".python-deps-"
PIP_TIMEOUT = 900.0
_TAIL_LINES = 12


async def install_requirements(
    archive: ModelArchive, *, enabled: bool, workdir: Path
) -> ModelArchive:
    """The archive with its requirements installed (`deps_dir` set), or unchanged."""
    model = archive.manifest.get("model")
    name = model.get("requirementsFile") if isinstance(model, dict) else None
    if not name:
        return archive
    label = f"model {archive.name} version {archive.version}"
    if not enabled:
        logger.warning(
            "The archive of %s lists Python requirements in %s, which are not installed: "
            "set install_py_dep_per_model: true to install them",
            label,
            name,
        )
        return archive
    requirements = await asyncio.to_thread(_requirements_path, archive.model_dir, str(name))
    target = await asyncio.to_thread(_fresh_target, archive, workdir)
    try:
        await _pip_install(requirements, target, cwd=archive.model_dir, label=label)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, target, True)
        raise
    logger.info("Installed the Python requirements of %s into %s", label, target)
    return dataclasses.replace(archive, deps_dir=target)


def _requirements_path(model_dir: Path, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
        raise InvalidModel(f"MANIFEST.json: requirementsFile {name!r} must name a file in it")
    path = model_dir / name
    if not path.is_file():
        raise InvalidModel(
            f"The manifest names requirements file {name!r}, which is not in the archive"
        )
    return path


def _fresh_target(archive: ModelArchive, workdir: Path) -> Path:
    """A new folder for the packages: inside the extracted archive, else under the workdir."""
    if archive.owned_dir is not None:
        return Path(tempfile.mkdtemp(prefix=DEPS_PREFIX, dir=archive.owned_dir))
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{archive.name}{DEPS_PREFIX}", dir=workdir))


async def _pip_install(requirements: Path, target: Path, *, cwd: Path, label: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]
    logger.info("Installing the Python requirements of %s: %s", label, " ".join(command))
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), PIP_TIMEOUT)
    except TimeoutError:
        await _kill(process)
        raise InvalidModel(
            f"Installing the Python requirements of {label} took longer than {PIP_TIMEOUT:.0f} s"
        ) from None
    except BaseException:
        await _kill(process)
        raise
    if process.returncode != 0:
        tail = " | ".join(_tail(output.decode("utf-8", "replace")))
        raise InvalidModel(
            f"Custom pip package installation failed for {label}: "
            f"pip exited with code {process.returncode}: {tail}"
        )


def _tail(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-_TAIL_LINES:]


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
