"""TorchServe's token keys: `key_file.json`, checking a request's key, renewing a key.

The file has TorchServe 0.12's shape, so a TorchServe user's existing file is read as it is:
`{"management": {"key", "expiration time"}, "inference": {...}, "API": {"key"}}`. Keys are
8 characters (base64url of 6 random bytes); the management and inference keys expire after
`token_expiration_min`, the API key (which only renews the others) never does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from serve.config import ConfigError
from serve.request import PRINTABLE_ID

logger = logging.getLogger(__name__)

KEY_FILE = "key_file.json"
Kind = Literal["management", "inference", "API"]
_EXPIRES = "expiration time"
# TorchServe's header pattern; the scheme's case is free (RFC 6750), whitespace as theirs
_BEARER = re.compile(r"^[Bb]earer\s+(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class Key:
    """One key; `expires` is a Unix time, None for the API key."""

    value: str
    expires: float | None

    @property
    def header(self) -> str:
        """The whole `Authorization` value a client sends, compared in one step."""
        return "Bearer " + self.value


class Tokens:
    """The three keys of a running server, and the file that holds them."""

    def __init__(self, path: Path, keys: Mapping[Kind, Key], lifetime_min: float) -> None:
        self.path = path
        self._lifetime = lifetime_min * 60.0
        self._keys: dict[Kind, Key] = dict(keys)
        self._headers: dict[Kind, str] = {kind: key.header for kind, key in keys.items()}
        self._lock = asyncio.Lock()

    def checker(self, *kinds: Kind) -> Callable[[str | None], bool]:
        """A check of an `Authorization` header against the current key of `kinds` (any)."""
        if len(kinds) == 1:
            (kind,) = kinds

            def allows(authorization: str | None) -> bool:
                return self.allows(kind, authorization)

            return allows

        def any_of(authorization: str | None) -> bool:
            return any(self.allows(kind, authorization) for kind in kinds)

        return any_of

    def allows(self, kind: Kind, authorization: str | None) -> bool:
        """Whether `authorization` carries the current, unexpired `kind` key.

        The usual header is compared whole against a prepared string (no allocation); only
        a header that differs is parsed, for TorchServe's looser spacing.
        """
        if authorization is None:
            return False
        try:
            matches = hmac.compare_digest(authorization, self._headers[kind])
            key = self._keys[kind]
            if not matches:
                found = _BEARER.match(authorization)
                matches = found is not None and hmac.compare_digest(found[1], key.value)
        except TypeError:  # a non-ASCII header: not a key of ours
            return False
        return matches and (key.expires is None or time.time() < key.expires)

    async def renew(self, kind: Kind) -> Key:
        """A new `kind` key: written to the file, then the old one refused at once."""
        async with self._lock:  # two renewals at once must not interleave their writes
            keys = {**self._keys, kind: _new_key(self._lifetime)}
            await asyncio.to_thread(write_key_file, self.path, keys)
            self._keys = keys
            self._headers[kind] = keys[kind].header
        logger.info("Renewed the %s key in %s", kind, self.path)
        return keys[kind]

    def expired(self) -> list[Kind]:
        """The keys whose time has passed."""
        now = time.time()
        return [
            k for k, key in self._keys.items() if key.expires is not None and key.expires <= now
        ]


def _new_key(lifetime_s: float | None) -> Key:
    expires = None if lifetime_s is None else time.time() + lifetime_s
    return Key(secrets.token_urlsafe(6), expires)


def load_or_create(directory: Path, lifetime_min: float) -> tuple[Tokens, bool]:
    """The keys of `directory/key_file.json`, written fresh when there is none.

    Returns the keys and whether an existing file was reused. A file that exists but cannot
    be read or parsed is a ConfigError naming it: the operator decides whether to delete it.
    Blocking: call it off the event loop.
    """
    path = (directory / KEY_FILE).resolve()
    if path.exists():
        keys = _read(path)
        if path.stat().st_mode & 0o077:
            logger.warning("%s can be read by other users; chmod 600 it", path)
        return Tokens(path, keys, lifetime_min), True
    lifetime = lifetime_min * 60.0
    keys = {
        "management": _new_key(lifetime),
        "inference": _new_key(lifetime),
        "API": _new_key(None),
    }
    try:
        write_key_file(path, keys)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot write the key file: {exc.strerror}") from exc
    return Tokens(path, keys, lifetime_min), False


def _read(path: Path) -> dict[Kind, Key]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the key file: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(str(path), f"the key file is not valid JSON ({exc}); {_HINT}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(str(path), f"the key file must hold a JSON object; {_HINT}")
    keys: dict[Kind, Key] = {}
    for kind in ("management", "inference", "API"):
        entry = raw.get(kind)
        value = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(value, str) or not PRINTABLE_ID.match(value):
            raise ConfigError(str(path), f'"{kind}" needs a "key" string; {_HINT}')
        expires = None
        if kind != "API":
            expires = _instant(path, kind, entry.get(_EXPIRES) if isinstance(entry, dict) else None)
        keys[kind] = Key(value, expires)
    return keys


_HINT = "fix it, or delete it to have new keys written"


def _instant(path: Path, kind: str, value: Any) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(
            str(path), f'"{kind}" needs an ISO "{_EXPIRES}", got {value!r}; {_HINT}'
        ) from None
    if moment.tzinfo is None:  # TorchServe writes UTC instants
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(expires: float) -> str:
    return datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")


def write_key_file(path: Path, keys: Mapping[Kind, Key]) -> None:
    """Replace the key file atomically, readable by its owner only (0600)."""
    body: dict[str, dict[str, str]] = {}
    for kind, key in keys.items():
        body[kind] = {"key": key.value}
        if key.expires is not None:
            body[kind][_EXPIRES] = _iso(key.expires)
    fd, temp = tempfile.mkstemp(prefix=".key_file.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp makes it 0600 already; said here because it matters
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(body, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
