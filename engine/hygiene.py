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
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
    def route(cls, dst: str, *, dev: str = "", table: int | str = "", via: str = "") -> "Change":
        return cls("route", {"dst": dst, "dev": dev, "table": str(table), "via": via})

    @classmethod
    def rule(cls, priority: int, *, table: int | str = "", family: int = 4, extra: Sequence[str] = ()) -> "Change":
        """An `ip rule` we added (identified by priority [+ table]); undo = delete it."""
        return cls("rule", {"priority": int(priority), "table": str(table), "family": family, "extra": list(extra)})

    @classmethod
    def nft_table(cls, family: str, name: str) -> "Change":
        return cls("nft-table", {"family": family, "name": name})

    @classmethod
    def file_contents(cls, path: str, original: bytes | None) -> "Change":
        """We are about to rewrite `path`; undo = restore `original` (None = the file did not exist)."""
        return cls("file", {"path": path,
                            "original": None if original is None else base64.b64encode(original).decode()})

    @classmethod
    def sysctl(cls, key: str, original: str) -> "Change":
        """We are about to change /proc/sys/<key with / for .>; undo = write the original back."""
        return cls("sysctl", {"key": key, "original": original})

    # -- undo --

    def undo_argv(self) -> list[str] | None:
        a = self.args
        if self.kind == "link":
            return ["ip", "link", "del", "dev", a["name"]]
        if self.kind == "route":
            fam = ["-6"] if ":" in a["dst"] else ["-4"]
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
        return None

    def undo(self, run: Runner) -> tuple[bool, str]:
        """(ok, message); ok also when the thing is already gone."""
        if self.kind == "file":
            path = Path(self.args["path"])
            try:
                if self.args["original"] is None:
                    path.unlink(missing_ok=True)
                else:
                    tmp = path.with_name(path.name + ".meshvpn-restore")
                    tmp.write_bytes(base64.b64decode(self.args["original"]))
                    os.replace(tmp, path)
            except OSError as e:
                return False, f"restore {path}: {e.strerror}"
            return True, f"restored {path}"
        if self.kind == "sysctl":
            p = Path("/proc/sys") / self.args["key"].replace(".", "/")
            try:
                p.write_text(self.args["original"] + "\n")
            except OSError as e:
                return False, f"sysctl {self.args['key']}: {e.strerror}"
            return True, f"sysctl {self.args['key']}={self.args['original']}"
        argv = self.undo_argv()
        if argv is None:
            return False, f"unknown change kind {self.kind!r}"
        rc, err = run(argv)
        if rc == 0:
            return True, " ".join(argv)
        if any(s in err for s in _ALREADY_GONE):
            return True, f"already gone: {' '.join(argv)}"
        return False, f"{' '.join(argv)}: {err or f'exit {rc}'}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.args}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Change":
        d = dict(d)
        kind = d.pop("kind")
        if not isinstance(kind, str):
            raise ValueError("change kind must be a string")
        return cls(kind, d)


@dataclass
class RecoveryReport:
    undone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    corrupt_lines: int = 0


class Journal:
    """Append-only, fsync'ed record of pending system changes (see module doc)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_JOURNAL, *, run: Runner = run_cmd,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.path = Path(path)
        self.run = run
        self.log = logger or logging.getLogger("meshvpn.hygiene")
        self._pending: dict[int, Change] = {}
        self._next_id = 1
        self._lines = 0
        self._loaded = False

    # -- file --

    def _load(self) -> int:
        """Read the file into _pending; returns the number of corrupt lines skipped."""
        self._pending.clear()
        corrupt = 0
        self._lines = 0
        try:
            data = self.path.read_text()
        except FileNotFoundError:
            data = ""
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
            except (ValueError, KeyError, TypeError):
                corrupt += 1  # a torn last line after a crash: skip it
        self._loaded = True
        return corrupt

    def _append(self, obj: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (json.dumps(obj, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._lines += 1

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            for cid, ch in sorted(self._pending.items()):
                os.write(fd, (json.dumps({"op": "rec", "id": cid, "change": ch.to_dict()}, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._lines = len(self._pending)

    # -- API --

    def pending(self) -> list[tuple[int, Change]]:
        if not self._loaded:
            self._load()
        return sorted(self._pending.items())

    def recover(self) -> RecoveryReport:
        """Undo everything a previous run left recorded (newest first), then empty the journal."""
        rep = RecoveryReport(corrupt_lines=self._load())
        for cid, ch in sorted(self._pending.items(), reverse=True):
            ok, msg = ch.undo(self.run)
            (rep.undone if ok else rep.failed).append(msg)
            self.log.warning("recovered leftover from a previous run: %s", msg) if ok else self.log.error("could not undo leftover: %s", msg)
        self._pending.clear()
        if self.path.exists():
            self._rewrite()
        return rep

    def record(self, change: Change) -> int:
        if not self._loaded:
            self._load()
        cid = self._next_id
        self._next_id += 1
        self._append({"op": "rec", "id": cid, "change": change.to_dict()})
        self._pending[cid] = change
        return cid

    def forget(self, cid: int) -> None:
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
            change.undo(self.run)
            self.forget(cid)
            raise OSError(f"{' '.join(do_argv)}: {err or f'exit {rc}'}")
        return cid

    def revert(self, cid: int) -> tuple[bool, str]:
        """Undo one recorded change now and forget it (kept recorded if the undo failed)."""
        ch = self._pending.get(cid)
        if ch is None:
            return True, "not pending"
        ok, msg = ch.undo(self.run)
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
