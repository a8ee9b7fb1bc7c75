"""OS DNS by rewriting /etc/resolv.conf, with a journaled backup in /run/meshvpn restored on stop or at the next start.

Writes are in place (truncate + write), not rename: inside `ip netns exec` and in
containers /etc/resolv.conf is a bind mount that cannot be replaced by rename. A symlinked
resolv.conf (e.g. to a resolved stub) is replaced by a regular file and re-linked on restore.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from engine.dns.osconfig import OSDNSConfig

DEFAULT_PATH = Path("/etc/resolv.conf")
DEFAULT_JOURNAL_DIR = Path("/run/meshvpn")
MARKER = "# resolv.conf written by meshvpn (MagicDNS); the original is restored when meshvpn stops"
MAX_NAMESERVERS = 3  # glibc MAXNS
MAX_SEARCH = 6  # older glibc MAXDNSRCH


def render(cfg: OSDNSConfig) -> str:
    """resolv.conf text for `cfg` (pure)."""
    lines = [MARKER]
    lines += [f"nameserver {ns}" for ns in cfg.nameservers[:MAX_NAMESERVERS]]
    if cfg.search_domains:
        lines.append("search " + " ".join(cfg.search_domains[:MAX_SEARCH]))
    return "\n".join(lines) + "\n"


def parse_nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1].split("%")[0])
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ResolvConfFile:
    """OS configurator writing resolv.conf. set(cfg) idempotent; set(None)/restore() put the original back."""

    def __init__(
        self,
        path: Path = DEFAULT_PATH,
        journal_dir: Path = DEFAULT_JOURNAL_DIR,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.path = Path(path)
        self._jdir = Path(journal_dir)
        self._meta = self._jdir / "resolv.json"
        self._backup = self._jdir / "resolv.conf.orig"
        self._log = logger or logging.getLogger("meshvpn.dns.resolvconf")

    # -- journal ---------------------------------------------------------------------------
    def _read_meta(self) -> dict | None:
        try:
            m = json.loads(self._meta.read_text())
            return m if isinstance(m, dict) else None
        except (OSError, ValueError):
            return None

    def _write_atomic(self, p: Path, text: str) -> None:
        self._jdir.mkdir(parents=True, exist_ok=True, mode=0o755)  # shared with the LocalAPI socket; journals hold no secrets
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)

    def _save_original(self) -> dict:
        meta: dict = {"path": str(self.path), "symlink": None, "absent": False, "written": None}
        if self.path.is_symlink():
            meta["symlink"] = os.readlink(self.path)
            original = ""
        elif self.path.exists():
            original = self.path.read_text()
        else:
            meta["absent"] = True
            original = ""
        # Backup content first, then the metadata that makes it authoritative.
        self._write_atomic(self._backup, original)
        self._write_atomic(self._meta, json.dumps(meta))
        return meta

    # -- API --------------------------------------------------------------------------------
    def original_nameservers(self) -> list[str]:
        """Nameservers the system had before us (the upstreams for non-tailnet names)."""
        meta = self._read_meta()
        try:
            if meta is None:
                return [n for n in parse_nameservers(self.path.read_text()) if n not in _OURS]
            if meta.get("symlink"):
                target = Path(meta["symlink"])
                if not target.is_absolute():
                    target = self.path.parent / target
                return parse_nameservers(target.read_text())
            return parse_nameservers(self._backup.read_text())
        except OSError:
            return []

    def set(self, cfg: OSDNSConfig | None) -> None:
        if cfg is None or cfg.is_empty():
            self.restore()
            return
        meta = self._read_meta() or self._save_original()
        text = render(cfg)
        if meta.get("written") != _sha(text):
            meta["written"] = _sha(text)
            # Journal the hash we are about to write before writing it.
            self._write_atomic(self._meta, json.dumps(meta))
        current = None
        if not self.path.is_symlink():
            try:
                current = self.path.read_text()
            except OSError:
                current = None
        if current != text:
            self._write_in_place(text)
            self._log.info("resolv.conf -> %s", ", ".join(cfg.nameservers))

    def _write_in_place(self, text: str) -> None:
        if self.path.is_symlink():
            self.path.unlink()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def restore(self) -> bool:
        """Put the original back if the file is still ours; returns whether anything was restored."""
        meta = self._read_meta()
        if meta is None:
            return False
        restored = False
        try:
            ours = False
            if not self.path.is_symlink() and self.path.exists():
                cur = self.path.read_text()
                ours = cur.startswith(MARKER) or _sha(cur) == meta.get("written")
            if ours:
                if meta.get("symlink"):
                    self.path.unlink()
                    os.symlink(meta["symlink"], self.path)
                elif meta.get("absent"):
                    self.path.unlink()
                else:
                    self._write_in_place(self._backup.read_text())
                restored = True
                self._log.info("resolv.conf restored")
            else:
                self._log.warning("resolv.conf was changed by someone else; leaving it alone")
        finally:
            self._meta.unlink(missing_ok=True)
            self._backup.unlink(missing_ok=True)
        return restored

    def cleanup_leftovers(self) -> bool:
        """At start: a journal means a previous run died holding resolv.conf; restore it."""
        return self.restore()


_OURS = frozenset({"100.100.100.100", "fd7a:115c:a1e0::53"})
