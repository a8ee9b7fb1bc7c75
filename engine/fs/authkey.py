"""`--auth-key file:PATH` for programs taking a pre-auth key; a literal key works, with a warning (`ps` shows argv)."""

from __future__ import annotations

import os
import stat
import sys
from typing import TextIO

MAX_KEY_BYTES = 4096
LITERAL_WARNING = (
    "warning: an auth key on the command line is visible to every local user (ps, /proc/*/cmdline); "
    "use --auth-key file:PATH (a 0600 file) instead"
)


class AuthKeyError(ValueError):
    """The key file cannot be used (message names the file, never its contents)."""


def read_key_file(path: str, *, warn: TextIO | None = None) -> str:
    """The key in `path` (whitespace stripped): a regular file of at most 4 KiB, warned about if others can read it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise AuthKeyError(f"cannot read auth key file {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise AuthKeyError(f"auth key file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_KEY_BYTES + 1)
    if len(raw) > MAX_KEY_BYTES:
        raise AuthKeyError(f"auth key file {path} is too large to hold an auth key")
    try:
        key = raw.decode().strip()
    except UnicodeDecodeError:
        raise AuthKeyError(f"auth key file {path} is not text") from None
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise AuthKeyError(f"auth key file {path} does not hold one auth key")
    if warn is not None and st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        print(
            f"warning: auth key file {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "chmod 600 it",
            file=warn,
        )
    return key


def resolve(raw: str | None, *, warn: TextIO | None = sys.stderr) -> str | None:
    """`file:PATH` -> the file's key; a literal -> itself, with a warning on `warn`; None/"" -> None."""
    if not raw:
        return None
    if raw.startswith("file:"):
        return read_key_file(raw[5:], warn=warn)
    if warn is not None:
        print(LITERAL_WARNING, file=warn)
    return raw
