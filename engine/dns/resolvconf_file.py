"""OS DNS by rewriting /etc/resolv.conf; the original is journaled in /run/meshvpn, restored on stop or at next start.

Writes are in place (truncate + write), not rename: inside `ip netns exec` and in
containers /etc/resolv.conf is a bind mount that cannot be replaced by rename. A symlinked
resolv.conf (e.g. to a resolved stub) is replaced by a regular file and re-linked on restore.

Journal (one JSON object, `JsonJournal` "resolv.json", replaced atomically):

    {"path": "/etc/resolv.conf", "symlink": "<target>" | null, "absent": bool,
     "original": "<text of the file before us>", "written": "<sha256 of what we write>"}

Order: the journal (with the original and the hash about to be written) is on disk before
every write to resolv.conf, so a SIGKILL at any point leaves enough to restore; the next
start (`cleanup_leftovers`) puts the original back if the file is still ours, then drops
the journal. A file someone else rewrote while we ran becomes the new original.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from engine.dns.names import ip_literals, valid_domains
from engine.dns.osconfig import OSDNSConfig
from engine.net.tsaddr import QUAD100_ADDRS
from engine.router.exitnode import JsonJournal

DEFAULT_PATH = Path("/etc/resolv.conf")
DEFAULT_JOURNAL_DIR = Path("/run/meshvpn")
JOURNAL_NAME = "resolv.json"
# Earlier versions kept the original in a second file and no "original" key; migrated on read.
LEGACY_BACKUP = "resolv.conf.orig"
MARKER = "# resolv.conf written by meshvpn (MagicDNS); the original is restored when meshvpn stops"
MAX_NAMESERVERS = 3  # glibc MAXNS
MAX_SEARCH = 6  # older glibc MAXDNSRCH


def render(cfg: OSDNSConfig) -> str:
    """resolv.conf text for `cfg` (pure). Anything that is not an IP / DNS name is left out (logged), so
    nothing from the control server can add a line or an option to the file."""
    lines = [MARKER]
    lines += [f"nameserver {ns}" for ns in ip_literals(cfg.nameservers)[:MAX_NAMESERVERS]]
    search = valid_domains(cfg.search_domains)
    if search:
        lines.append("search " + " ".join(search[:MAX_SEARCH]))
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
        self._journal = JsonJournal(self._jdir, JOURNAL_NAME)
        self._log = logger or logging.getLogger("meshvpn.dns.resolvconf")
        self._written: str | None = None  # what set() last wrote (None: the file is not ours now)

    # -- journal ---------------------------------------------------------------------------
    def _read_journal(self) -> dict | None:
        j = self._journal.read()
        if j is None or isinstance(j.get("original"), str):
            return j
        return self._migrate_legacy(j)

    def _migrate_legacy(self, meta: dict) -> dict:
        """An earlier version's journal (metadata + resolv.conf.orig) is rewritten in one piece."""
        try:
            original = (self._jdir / LEGACY_BACKUP).read_text()
        except OSError:
            original = ""
        j = {
            "path": meta.get("path", str(self.path)),
            "symlink": meta.get("symlink"),
            "absent": bool(meta.get("absent")),
            "original": original,
            "written": meta.get("written"),
        }
        self._journal.write(j)
        (self._jdir / LEGACY_BACKUP).unlink(missing_ok=True)
        return j

    def _snapshot(self) -> dict:
        """What resolv.conf is now (the original to journal before we first write)."""
        j: dict = {"path": str(self.path), "symlink": None, "absent": False, "original": "", "written": None}
        if self.path.is_symlink():
            j["symlink"] = os.readlink(self.path)
        elif self.path.exists():
            j["original"] = self.path.read_text()
        else:
            j["absent"] = True
        return j

    def _current_text(self) -> str | None:
        """The file's text if it is a regular file we can read, else None (symlink, absent)."""
        if self.path.is_symlink():
            return None
        try:
            return self.path.read_text()
        except OSError:
            return None

    def _is_ours(self, text: str | None, j: dict) -> bool:
        # "" too: a crash between truncate and write leaves an empty file that is still ours.
        return text is not None and (text == "" or text.startswith(MARKER) or _sha(text) == j.get("written"))

    # -- API --------------------------------------------------------------------------------
    def original_nameservers(self) -> list[str]:
        """Nameservers the system had before us (the upstreams for non-tailnet names)."""
        j = self._read_journal()
        try:
            if j is None:
                return [n for n in parse_nameservers(self.path.read_text()) if n not in _OURS]
            if j.get("symlink"):
                target = Path(j["symlink"])
                if not target.is_absolute():
                    target = self.path.parent / target
                return parse_nameservers(target.read_text())
            return parse_nameservers(j["original"])
        except OSError:
            return []

    def set(self, cfg: OSDNSConfig | None) -> None:
        if cfg is None or cfg.is_empty():
            self.restore()
            return
        text = render(cfg)
        current = self._current_text()
        j = self._read_journal()
        if j is not None and not self._is_ours(current, j) and not (current is None and j.get("absent")):
            self._log.warning("resolv.conf was replaced by someone else while we ran; keeping that as the original")
            j = None
        if j is None:
            j = self._snapshot()
        if j.get("written") != _sha(text) or not self._journal.path.exists():
            j["written"] = _sha(text)
            # The original and the hash we are about to write are on disk before the write.
            self._journal.write(j)
        if current != text:
            self._write_in_place(text)
            self._log.info("resolv.conf -> %s", ", ".join(cfg.nameservers))
        self._written = text

    def trampled(self) -> bool:
        """Another program (a DHCP client, NetworkManager) replaced what we wrote since the last set()."""
        return self._written is not None and self._current_text() != self._written

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
        self._written = None
        j = self._read_journal()
        if j is None:
            return False
        current = self._current_text()
        restored = False
        if self._is_ours(current, j):
            if j.get("symlink"):
                self.path.unlink()
                os.symlink(j["symlink"], self.path)
            elif j.get("absent"):
                self.path.unlink()
            else:
                self._write_in_place(j["original"])
            restored = True
            self._log.info("resolv.conf restored")
        elif current != j["original"] and not (current is None and (j.get("absent") or j.get("symlink"))):
            self._log.warning("resolv.conf was changed by someone else; leaving it alone")
        # Only once the original is back (or deliberately left alone) does the journal go; if the
        # write above failed, it stays for the next attempt.
        self._journal.remove()
        return restored

    def cleanup_leftovers(self) -> bool:
        """At start: a journal means a previous run died holding resolv.conf; restore it."""
        return self.restore()


_OURS = frozenset(QUAD100_ADDRS)
