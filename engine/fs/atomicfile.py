"""Atomic file replacement: an O_EXCL temp file with an unguessable name and explicit mode, fsync'ed, then renamed."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600, fsync: bool = True) -> None:
    """Replace `path` with `data`; readers see the old or the new file, never a torn one.

    The temp file sits next to `path` (same filesystem), is created with O_EXCL | O_NOFOLLOW (a planted
    file or symlink under the temp name makes the write fail instead of writing through it) and gets
    `mode` by fchmod, whatever the umask.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _OPEN_FLAGS, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
