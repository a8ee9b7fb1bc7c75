"""Auth keys for tests go through 0600 files (`--auth-key file:PATH`), never argv: `ps` shows argv to every user."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def key_file_arg(key: str, directory: str | os.PathLike[str]) -> str:
    """Write `key` to a new 0600 file in `directory` and return the "file:PATH" argument for it."""
    path = Path(directory) / f"authkey-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return f"file:{path}"
