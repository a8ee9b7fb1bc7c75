"""A journal of the helper's system changes, so a crashed run's leftovers are undone at next start.

Protocol for every code path that changes the system (router, DNS, firewall, TUN):

    cid = journal.record(Change.route("100.64.0.0/10", dev="meshvpn0", table=52))   # 1. write+fsync first
    ...make the change...                                                            # 2. then act
    ...later, when undoing it normally...
    journal.forget(cid)                                                              # 3. after undoing

or in one step: `cid = journal.apply(change, do_argv)` / `journal.revert(cid)`.

At start the service calls `journal.recover()`: every change recorded but not forgotten (the
previous run was SIGKILLed, crashed, or lost power before cleaning up) is undone newest-first,
and the journal is emptied. Undo is idempotent: "already gone" counts as success, so recovering
twice, or recovering changes the owner had partly undone, is harmless.

File: JSON lines in /run/meshvpn/changes.jsonl (tmpfs: interfaces/routes/rules do not survive a
reboot either). Changes that do survive a reboot (a rewritten /etc/resolv.conf) belong in a
second journal under the state directory (`Journal(persistent_path)`), same API.

    {"op": "rec", "id": 7, "change": {"kind": "route", ...}}
    {"op": "fgt", "id": 7}

Trust: a journal is only read if it is a regular file owned by root (or us) and not group/world-
writable, in a directory nobody else can write (engine/fs/trustedpath.py); otherwise it is moved aside
(`<name>.rejected`) untouched. Each change is undone only if it is one the helper itself makes
(`OwnChanges`: its TUN, routes/rules in its table and priority range, its nft table, its two
forwarding sysctls, resolv.conf); anything else a journal names is refused, never acted on.

One journal for every subsystem: the composition root (engine/service.py) creates it and hands it
through the engine to the exit router (rules + table-52 routes), the nft forwarder (its table and
the forwarding sysctls it changed) and the resolv.conf writer (the original file). Each records
before it changes the OS and forgets after it has undone the change itself; at start-up
`recover()` undoes everything (the service), and a subsystem's start-up cleanup calls
`recover(select=...)` for its own kinds of change only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.fs.atomicfile import write_atomic
from engine.fs.trustedpath import UntrustedPath, check_stat, open_trusted

DEFAULT_JOURNAL = "/run/meshvpn/changes.jsonl"
COMPACT_AFTER_LINES = 1000  # rewrite the file (pending records only) past this many lines

# stderr fragments meaning "the thing to remove is not there" (ip(8), nft(8))
_ALREADY_GONE = (
    "Cannot find device",
    "No such process",
    "No such file or directory",
    "does not exist",
    "not found",
    "Object not found",
)

Runner = Callable[[Sequence[str]], "tuple[int, str]"]

MAX_JOURNAL_BYTES = 4 << 20
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_IP_ARG = re.compile(r"^[A-Za-z0-9_.:/]{1,64}$")  # one `ip rule` selector token; never an option
_SYSCTL_VALUE = re.compile(r"^[0-9]$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class OwnChanges:
    """The OS changes this helper makes, i.e. the only ones a journal may ask it to undo."""

    links: frozenset[str] = frozenset({"meshvpn0"})
    tables: frozenset[str] = frozenset({"52"})
    # tables an `ip rule` in our priority range may look up besides ours (the exit router's bypass rules)
    rule_lookups: frozenset[str] = frozenset({"main", "default"})
    rule_priorities: range = range(5200, 5300)
    nft_tables: frozenset[tuple[str, str]] = frozenset({("inet", "meshvpn")})
    sysctls: frozenset[str] = frozenset({"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"})
    files: frozenset[str] = frozenset({"/etc/resolv.conf"})

    @classmethod
    def for_tun(cls, tun: str, **kw: Any) -> "OwnChanges":
        return cls(links=frozenset({tun}), **kw)


def run_cmd(argv: Sequence[str]) -> tuple[int, str]:
    """Run a command; (returncode, stderr). Never raises for a failing command."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return p.returncode, p.stderr.strip()


@dataclass(frozen=True)
class Change:
    """One undoable system change. `args` are JSON-able; see the constructors."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    # -- constructors --

    @classmethod
    def link(cls, name: str) -> "Change":
        """A network interface we created (TUN, veth, ...): undo = delete it."""
        return cls("link", {"name": name})

    @classmethod
    def route(cls, dst: str, *, dev: str = "", table: int | str = "", via: str = "", family: int = 0) -> "Change":
        """A route we added; undo = delete it (any type: unicast, throw). `family` 0 = from `dst`."""
        d: dict[str, Any] = {"dst": dst, "dev": dev, "table": str(table), "via": via}
        if family:
            d["family"] = family  # needed for "default"
        return cls("route", d)

    @classmethod
    def rule(cls, priority: int, *, table: int | str = "", family: int = 4, extra: Sequence[str] = ()) -> "Change":
        """An `ip rule` we added (identified by priority [+ table]); undo = delete it."""
        return cls("rule", {"priority": int(priority), "table": str(table), "family": family, "extra": list(extra)})

    @classmethod
    def nft_table(cls, family: str, name: str) -> "Change":
        return cls("nft-table", {"family": family, "name": name})

    @classmethod
    def file_contents(
        cls, path: str, original: bytes | None, *, symlink: str | None = None, written: str | None = None
    ) -> "Change":
        """We are about to rewrite `path`; undo = restore `original` (None = the file did not exist), or
        re-create the symlink `symlink` it was. With `written` (sha256 hex of what we write) the undo
        only restores while the file is still ours (that hash, or empty: a crash between truncate and
        write); a file someone else rewrote meanwhile is left alone."""
        d: dict[str, Any] = {
            "path": path,
            "original": None if original is None else base64.b64encode(original).decode(),
        }
        if symlink is not None:
            d["symlink"] = symlink
        if written is not None:
            d["written"] = written
        return cls("file", d)

    @classmethod
    def sysctl(cls, key: str, original: str) -> "Change":
        """We are about to change /proc/sys/<key with / for .>; undo = write the original back."""
        return cls("sysctl", {"key": key, "original": original})

    # -- validation --

    def refusal(self, own: OwnChanges) -> str | None:
        """Why undoing this change is refused (not one the helper makes), or None if it may be undone."""
        try:
            return self._refusal(own)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return f"malformed {self.kind!r} change ({type(e).__name__})"

    def _refusal(self, own: OwnChanges) -> str | None:
        a = self.args
        if self.kind == "link":
            return None if a["name"] in own.links else f"interface {a['name']!r} is not ours"
        if self.kind == "route":
            if any(not isinstance(a.get(k, ""), str) for k in ("dst", "dev", "via", "table")):
                return "route fields must be strings"  # they become `ip` arguments
            if a.get("family", 0) not in (0, 4, 6) or type(a.get("family", 0)) is not int:
                return "bad route family"
            if a["dst"] != "default":
                ipaddress.ip_network(a["dst"], strict=False)
            if a.get("via"):
                ipaddress.ip_address(a["via"])
            if a.get("dev") and a["dev"] not in own.links:
                return f"route via interface {a['dev']!r} is not ours"
            return None if str(a.get("table")) in own.tables else f"route table {a.get('table')!r} is not ours"
        if self.kind == "rule":
            if type(a["priority"]) is not int or a["priority"] not in own.rule_priorities:
                return f"rule priority {a['priority']!r} is not ours"
            if not isinstance(a.get("table", ""), str):
                return "rule table must be a string"  # it becomes an `ip` argument
            if a.get("table") and str(a["table"]) not in own.tables | own.rule_lookups:
                return f"rule table {a['table']!r} is not ours"
            if a.get("family", 4) not in (4, 6):
                return "bad rule family"
            if not all(isinstance(x, str) and _IP_ARG.match(x) for x in a.get("extra") or ()):
                return "bad rule selector"
            return None
        if self.kind == "nft-table":
            return (
                None
                if (a["family"], a["name"]) in own.nft_tables
                else f"nft table {a['family']} {a['name']} is not ours"
            )
        if self.kind == "file":
            if a["path"] not in own.files:
                return f"file {a['path']!r} is not one the helper writes"
            if a["original"] is not None:
                base64.b64decode(a["original"], validate=True)
            link = a.get("symlink")
            if link is not None and (not isinstance(link, str) or not link or "\0" in link or len(link) > 4096):
                return "bad symlink target"
            if a.get("written") is not None and not (isinstance(a["written"], str) and _SHA256.match(a["written"])):
                return "bad hash of the written file"
            return None
        if self.kind == "sysctl":
            if a["key"] not in own.sysctls:
                return f"sysctl {a['key']!r} is not one the helper sets"
            return None if _SYSCTL_VALUE.match(a["original"]) else f"bad value for sysctl {a['key']}"
        return f"unknown change kind {self.kind!r}"

    # -- undo --

    def undo_argv(self) -> list[str] | None:
        a = self.args
        if self.kind == "link":
            return ["ip", "link", "del", "dev", a["name"]]
        if self.kind == "route":
            fam = ["-6"] if a.get("family") == 6 or (not a.get("family") and ":" in a["dst"]) else ["-4"]
            argv = ["ip", *fam, "route", "del", a["dst"]]
            if a.get("via"):
                argv += ["via", a["via"]]
            if a.get("dev"):
                argv += ["dev", a["dev"]]
            if a.get("table"):
                argv += ["table", a["table"]]
            return argv
        if self.kind == "rule":
            argv = ["ip", "-6" if a.get("family") == 6 else "-4", "rule", "del", "priority", str(a["priority"])]
            if a.get("table"):
                argv += ["table", a["table"]]
            return argv + list(a.get("extra") or ())
        if self.kind == "nft-table":
            return ["nft", "delete", "table", a["family"], a["name"]]
        if self.kind == "sysctl":  # sysctl(8), not /proc/sys: runs in the runner's network namespace
            return ["sysctl", "-qw", f"{a['key']}={a['original']}"]
        return None

    def undo(self, run: Runner, own: OwnChanges | None = None) -> tuple[bool, str]:
        """(ok, message); ok also when the thing is already gone. With `own`, refuses what is not ours."""
        if own is not None:
            why = self.refusal(own)
            if why is not None:
                return False, f"refused: {why}"
        if self.kind == "file":
            return self._restore_file()
        argv = self.undo_argv()
        if argv is None:
            return False, f"unknown change kind {self.kind!r}"
        rc, err = run(argv)
        if rc == 0:
            return True, " ".join(argv)
        if any(s in err for s in _ALREADY_GONE):
            return True, f"already gone: {' '.join(argv)}"
        return False, f"{' '.join(argv)}: {err or f'exit {rc}'}"

    def _restore_file(self) -> tuple[bool, str]:
        a = self.args
        path = Path(a["path"])
        try:
            if a.get("written") is not None and not _still_ours(path, a["written"]):
                return True, f"left {path} alone: changed by someone else"
            if a.get("symlink"):
                path.unlink(missing_ok=True)
                os.symlink(a["symlink"], path)
            elif a["original"] is None:
                path.unlink(missing_ok=True)
            else:
                write_in_place(path, base64.b64decode(a["original"]))
        except (OSError, binascii.Error) as e:
            return False, f"restore {path}: {getattr(e, 'strerror', None) or e}"
        return True, f"restored {path}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.args}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Change":
        if not isinstance(d, dict):
            raise ValueError("change must be an object")
        d = dict(d)
        kind = d.pop("kind")
        if not isinstance(kind, str):
            raise ValueError("change kind must be a string")
        return cls(kind, d)


def write_in_place(path: Path, data: bytes) -> None:
    """Truncate + write (not rename: /etc/resolv.conf may be a bind mount); a symlink there is replaced."""
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _still_ours(path: Path, written: str) -> bool:
    """The file is a regular file holding what we wrote (sha256 `written`), or empty (crash mid-write)."""
    if path.is_symlink():
        return False
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    return data == b"" or hashlib.sha256(data).hexdigest() == written


@dataclass
class RecoveryReport:
    undone: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # the changes undone (same order as `undone`)
    failed: list[str] = field(default_factory=list)  # includes refused ("refused: ...") changes and journals
    corrupt_lines: int = 0


class Journal:
    """Append-only, fsync'ed record of pending system changes (see module doc)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_JOURNAL,
        *,
        run: Runner = run_cmd,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        own: OwnChanges | None = None,
    ) -> None:
        self.path = Path(path)
        self.run = run
        self.own = own or OwnChanges()
        self.log = logger or logging.getLogger("meshvpn.hygiene")
        self._pending: dict[int, Change] = {}
        self._next_id = 1
        self._lines = 0
        self._loaded = False
        # subsystems record from the loop thread and from their re-assert workers
        self._lock = threading.RLock()

    # -- file --

    def _load(self) -> int:
        """Read the file into _pending; returns the number of corrupt lines skipped."""
        self._pending.clear()
        corrupt = 0
        self._lines = 0
        fd = open_trusted(self.path, "journal")  # raises UntrustedPath
        data = ""
        if fd is not None:
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_JOURNAL_BYTES).decode(errors="replace")
        for line in data.splitlines():
            if not line.strip():
                continue
            self._lines += 1
            try:
                d = json.loads(line)
                cid = int(d["id"])
                if d["op"] == "rec":
                    self._pending[cid] = Change.from_dict(d["change"])
                elif d["op"] == "fgt":
                    self._pending.pop(cid, None)
                self._next_id = max(self._next_id, cid + 1)
            except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
                corrupt += 1  # a torn last line after a crash: skip it
        self._loaded = True
        return corrupt

    def _append(self, obj: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            check_stat(os.fstat(fd), f"journal {self.path}")
            os.write(fd, (json.dumps(obj, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._lines += 1

    def _rewrite(self) -> None:
        lines = [
            json.dumps({"op": "rec", "id": cid, "change": ch.to_dict()}, separators=(",", ":")) + "\n"
            for cid, ch in sorted(self._pending.items())
        ]
        write_atomic(self.path, "".join(lines), mode=0o600)
        self._lines = len(self._pending)

    def _reject(self, why: str) -> None:
        """Move an untrusted journal aside, unread; the helper never acts on it."""
        bad = self.path.with_name(self.path.name + ".rejected")
        try:
            os.replace(self.path, bad)
            self.log.error("refused journal: %s; moved it to %s without acting on it", why, bad)
        except OSError as e:
            self.log.error("refused journal: %s (could not move it aside: %s)", why, e.strerror)

    # -- API --

    def pending(self) -> list[tuple[int, Change]]:
        with self._lock:
            if not self._loaded:
                self._load()
            return sorted(self._pending.items())

    def recover(self, select: Callable[[Change], bool] | None = None) -> RecoveryReport:
        """Undo everything a previous run left recorded (newest first), then empty the journal.

        With `select`, only the pending changes it picks are undone and dropped (a subsystem's start-up
        cleanup); the others stay recorded. A change whose undo failed or was refused is dropped too.
        """
        with self._lock:
            try:
                rep = RecoveryReport(corrupt_lines=self._load())
            except UntrustedPath as e:
                self._reject(str(e))
                self._pending.clear()
                self._loaded = True
                return RecoveryReport(failed=[f"refused: {e}"])
            for cid, ch in sorted(self._pending.items(), reverse=True):
                if select is not None and not select(ch):
                    continue
                ok, msg = ch.undo(self.run, self.own)
                (rep.undone if ok else rep.failed).append(msg)
                if ok:
                    rep.changes.append(ch)
                    self.log.warning("recovered leftover from a previous run: %s", msg)
                else:
                    self.log.error("could not undo leftover: %s", msg)
                del self._pending[cid]
            if self.path.exists():
                self._rewrite()
            return rep

    def record(self, change: Change) -> int:
        with self._lock:
            if not self._loaded:
                try:
                    self._load()
                except UntrustedPath as e:  # never add to a journal we would refuse to read
                    self._reject(str(e))
                    self._pending.clear()
                    self._loaded = True
            cid = self._next_id
            self._next_id += 1
            self._append({"op": "rec", "id": cid, "change": change.to_dict()})
            self._pending[cid] = change
            return cid

    def forget(self, cid: int) -> None:
        with self._lock:
            if cid not in self._pending:
                return
            self._append({"op": "fgt", "id": cid})
            del self._pending[cid]
            if self._lines > COMPACT_AFTER_LINES:
                self._rewrite()

    def apply(self, change: Change, do_argv: Sequence[str]) -> int:
        """Record, then run `do_argv`; on failure undo (idempotently), forget, and raise."""
        cid = self.record(change)
        rc, err = self.run(do_argv)
        if rc != 0:
            change.undo(self.run, self.own)
            self.forget(cid)
            raise OSError(f"{' '.join(do_argv)}: {err or f'exit {rc}'}")
        return cid

    def revert(self, cid: int) -> tuple[bool, str]:
        """Undo one recorded change now and forget it (kept recorded if the undo failed)."""
        with self._lock:
            ch = self._pending.get(cid)
            if ch is None:
                return True, "not pending"
            ok, msg = ch.undo(self.run, self.own)
            if ok:
                self.forget(cid)
            return ok, msg

    def revert_all(self) -> list[str]:
        """Undo every pending change, newest first (clean shutdown); returns failures."""
        failed = []
        for cid, _ch in sorted(self._pending.items(), reverse=True):
            ok, msg = self.revert(cid)
            if not ok:
                failed.append(msg)
        return failed
