"""Vets the subsystems' crash journals (exit routes, nft + sysctls, resolv.conf) before their cleanup acts on them."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from engine.fs.trustedpath import UntrustedPath, check_dir, open_trusted

MAX_BYTES = 1 << 20
RESOLV_CONF = "/etc/resolv.conf"
FORWARDING_SYSCTLS = frozenset({"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"})


def _exitnode(d: dict[str, Any]) -> str | None:
    from engine.router.exitnode import desired_rules

    ours = [asdict(r) for r in desired_rules((4, 6))]
    for r in d.get("rules") or []:
        if r not in ours:
            return f"rule {r!r} is not one the helper installs"
    for rt in d.get("routes") or []:
        if not isinstance(rt, dict) or set(rt) - {"family", "kind", "dst", "dev"} or rt.get("family") not in (4, 6):
            return "malformed route"
        if rt.get("kind") == "dev":
            if rt.get("dst") != "default" or not isinstance(rt.get("dev"), str) or not rt["dev"].isprintable():
                return "route is not a default route via an interface"
        elif rt.get("kind") == "throw":
            ipaddress.ip_network(str(rt.get("dst")), strict=False)
        else:
            return "unknown route kind"
    return None


def _nft(d: dict[str, Any]) -> str | None:
    sysctls = d.get("sysctl") or {}
    if not isinstance(sysctls, dict):
        return "malformed sysctl map"
    for key, old in sysctls.items():
        if key not in FORWARDING_SYSCTLS:
            return f"sysctl {key!r} is not one the helper sets"
        if old is not None and old not in ("0", "1", "2"):
            return f"bad original value for {key}"
    return None


def _resolv(d: dict[str, Any]) -> str | None:
    if d.get("path", RESOLV_CONF) != RESOLV_CONF:
        return f"file {d.get('path')!r} is not one the helper writes"
    link = d.get("symlink")
    if link is not None and (not isinstance(link, str) or "\0" in link or len(link) > 4096):
        return "bad symlink target"
    if not isinstance(d.get("original", ""), str):
        return "bad original contents"
    return None


# file name in the journal dir -> content check (None = only the file's owner and mode are checked)
CHECKS: dict[str, Callable[[dict[str, Any]], str | None] | None] = {
    "exitnode.json": _exitnode,
    "nft.json": _nft,
    "resolv.json": _resolv,
    "resolv.conf.orig": None,  # legacy resolv.conf backup
}


def _read(path: Path) -> dict[str, Any] | None:
    fd = open_trusted(path, "journal")
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_BYTES)
    return {} if path.suffix != ".json" else json.loads(raw)


def vet_journal_dir(jdir: str | os.PathLike[str], log: logging.Logger) -> list[str]:
    """Move aside (unread by their owners) every subsystem journal in `jdir` the helper did not write.

    Returns one message per refused journal. The subsystems' cleanups then see no journal and only
    remove what they find in the live system and recognise as their own.
    """
    jdir = Path(jdir)
    check_dir(jdir)  # raises UntrustedPath: the caller refuses the whole directory
    refused = []
    for name, check in CHECKS.items():
        path = jdir / name
        try:
            d = _read(path)
            if d is None:
                continue
            if check is not None:
                if not isinstance(d, dict):
                    raise ValueError("not a JSON object")
                why = check(d)
                if why:
                    raise ValueError(why)
        except (UntrustedPath, ValueError, TypeError, KeyError, OSError, RecursionError) as e:
            msg = f"journal {path}: {e}"
            try:
                os.replace(path, path.with_name(name + ".rejected"))
            except OSError as e2:
                msg += f" (could not move it aside: {e2.strerror})"
            log.error("refused %s; moved aside without acting on it", msg)
            refused.append(f"refused: {msg}")
    return refused
