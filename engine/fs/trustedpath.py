"""Refuse paths a less privileged local user could have planted or can swap: trusted owner, no group/world write."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterable


class UntrustedPath(ValueError):
    """A path (or one of its directories) is controlled by someone other than root (or us)."""


def trusted_uids() -> frozenset[int]:
    """root, and the user we run as (tests run unprivileged helpers in their own directories)."""
    return frozenset({0, os.geteuid()})


def _describe(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"


def check_dir(path: str | os.PathLike[str]) -> None:
    """`path` (a directory that may not exist yet) and all its existing ancestors must be trusted.

    Every existing component is owned by root (or us) and not group/world-writable; an ancestor may be
    sticky and world-writable (like /tmp: others cannot rename or delete what root put there), but the
    deepest existing directory, the one our files land in, may not.
    """
    p = Path(os.path.realpath(os.path.abspath(path)))
    chain = [p, *p.parents]
    deepest = True
    for d in chain:
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise UntrustedPath(f"cannot check directory {d}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UntrustedPath(f"{d} is not a directory")
        if st.st_uid not in trusted_uids():
            raise UntrustedPath(f"directory {d} is not owned by root ({_describe(st)})")
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (deepest or not st.st_mode & stat.S_ISVTX):
            raise UntrustedPath(f"directory {d} is writable by other users ({_describe(st)})")
        deepest = False


def check_stat(st: os.stat_result, what: str) -> None:
    """A file we are about to act on: regular, owned by root (or us), not group/world-writable."""
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedPath(f"{what} is not a regular file")
    if st.st_uid not in trusted_uids():
        raise UntrustedPath(f"{what} is not owned by root ({_describe(st)})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedPath(f"{what} is writable by other users ({_describe(st)})")


def check_file_path(path: str | os.PathLike[str]) -> Path:
    """A file the helper will read and write: its directories are trusted and, if it exists, so is it (no symlink)."""
    p = Path(os.path.abspath(path))
    check_dir(p.parent)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    except OSError as e:
        raise UntrustedPath(f"cannot check {p}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedPath(f"{p} is a symlink")
    if stat.S_ISSOCK(st.st_mode):  # a stale LocalAPI socket: its owner is checked like a file's
        if st.st_uid not in trusted_uids():
            raise UntrustedPath(f"{p} is not owned by root ({_describe(st)})")
        return p
    check_stat(st, str(p))
    return p


def open_trusted(path: str | os.PathLike[str], what: str) -> int | None:
    """Open an existing journal for reading (no symlinks) and check it by fstat; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UntrustedPath(f"cannot open {what} {path}: {e.strerror}") from None
    try:
        check_stat(os.fstat(fd), f"{what} {path}")
    except UntrustedPath:
        os.close(fd)
        raise
    return fd


def first_refusal(checks: Iterable[tuple[str, str, Callable[[str], object]]]) -> str | None:
    """The first (flag, path, check) whose path fails its check, as a message for the command line; None if all pass."""
    for flag, value, check in checks:
        if not value:
            continue
        try:
            check(value)
        except UntrustedPath as e:
            return f"refusing {flag} {value}: {e}; use a location only root can write"
    return None
