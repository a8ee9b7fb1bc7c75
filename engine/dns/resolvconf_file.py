"""OS DNS by rewriting /etc/resolv.conf; the original is journaled, restored on stop or at next start.

Writes are in place (truncate + write), not rename: inside `ip netns exec` and in
containers /etc/resolv.conf is a bind mount that cannot be replaced by rename. A symlinked
resolv.conf (e.g. to a resolved stub) is replaced by a regular file and re-linked on restore.

Journal: the helper's one journal of OS changes (engine/recovery/journal.py), one record

    Change.file_contents("/etc/resolv.conf", <original bytes> | None (absent), symlink=<target> | None,
                         written=<sha256 of what we write>)

Order: the record (with the original and the hash about to be written) is on disk before
every write to resolv.conf (a new hash: the new record first, then the old one forgotten), so a
SIGKILL at any point leaves enough to restore; the journal's recovery at the next start (and
`cleanup_leftovers`) puts the original back if the file is still ours (the hash, or empty), else
leaves it alone. A file someone else rewrote while we ran becomes the new original.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from engine.dns.names import ip_literals, valid_domains
from engine.dns.osconfig import OSDNSConfig
from engine.net.tsaddr import QUAD100_ADDRS
from engine.recovery.journal import DEFAULT_JOURNAL, Change, Journal, OwnChanges, write_in_place

DEFAULT_PATH = Path("/etc/resolv.conf")
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
        journal_dir: Path | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        *,
        journal: Journal | None = None,
    ) -> None:
        """`journal`: the helper's one journal (composition root); without it (tests, scripts) a
        journal `changes.jsonl` in `journal_dir` (default: the helper's) that may restore `path` only."""
        self.path = Path(path)
        if journal is None:
            jpath = Path(journal_dir) / Path(DEFAULT_JOURNAL).name if journal_dir is not None else Path(DEFAULT_JOURNAL)
            journal = Journal(jpath, own=OwnChanges(files=frozenset({str(self.path)})))
        self._journal = journal
        self._log = logger or logging.getLogger("meshvpn.dns.resolvconf")
        self._written: str | None = None  # what set() last wrote (None: the file is not ours now)
        self._j: dict | None = None  # the original while the file is ours (see _snapshot)
        self._cid: int | None = None  # its journal record

    # -- journal ---------------------------------------------------------------------------
    def _read_journal(self) -> dict | None:
        return self._j

    def _record(self, j: dict) -> None:
        """Journal `j` (a new record first, then the previous one forgotten)."""
        original = None if j.get("absent") or j.get("symlink") else j["original"].encode()
        cid = self._journal.record(
            Change.file_contents(str(self.path), original, symlink=j.get("symlink"), written=j["written"])
        )
        if self._cid is not None:
            self._journal.forget(self._cid)
        self._cid, self._j = cid, j

    def _drop_record(self) -> None:
        if self._cid is not None:
            self._journal.forget(self._cid)
        self._cid = self._j = None

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
        if j.get("written") != _sha(text) or self._cid is None:
            # The original and the hash we are about to write are on disk before the write.
            self._record({**j, "written": _sha(text)})
        if current != text:
            self._write_in_place(text)
            self._log.info("resolv.conf -> %s", ", ".join(cfg.nameservers))
        self._written = text

    def trampled(self) -> bool:
        """Another program (a DHCP client, NetworkManager) replaced what we wrote since the last set()."""
        return self._written is not None and self._current_text() != self._written

    def _write_in_place(self, text: str) -> None:
        write_in_place(self.path, text.encode())

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
        # Only once the original is back (or deliberately left alone) is the record forgotten; if the
        # write above failed, it stays for the next attempt (and the next start's recovery).
        self._drop_record()
        return restored

    def cleanup_leftovers(self) -> bool:
        """At start: a journal record means a previous run died holding resolv.conf; restore it (if still ours)."""
        self.restore()
        path = str(self.path)
        rep = self._journal.recover(select=lambda ch: ch.kind == "file" and ch.args.get("path") == path)
        if rep.failed:
            self._log.error("resolv.conf not restored: %s", "; ".join(rep.failed))
        return any(m.startswith("restored") for m in rep.undone)


_OURS = frozenset(QUAD100_ADDRS)
