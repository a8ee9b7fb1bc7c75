"""ResolvConfFile on a temp path: journal, idempotent set, restore (also after SIGKILL), symlink/absent/rewritten."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.dns.osconfig import OSDNSConfig
from engine.dns.resolvconf_file import MARKER, ResolvConfFile
from engine.recovery.journal import Change, Journal, OwnChanges

CFG = OSDNSConfig(("100.100.100.100",), ("tail.example",))
ORIG = "nameserver 10.0.0.53\nsearch lan\n"


def test_set_restore_roundtrip(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    m = ResolvConfFile(path, j)
    m.set(CFG)
    text = path.read_text()
    assert text.startswith(MARKER) and "nameserver 100.100.100.100" in text
    assert m.original_nameservers() == ["10.0.0.53"]
    ino = path.stat().st_ino
    m.set(CFG)
    assert path.read_text() == text and path.stat().st_ino == ino  # in place, idempotent
    m.set(OSDNSConfig(("100.100.100.100",), ("other.example",)))
    assert "other.example" in path.read_text()
    assert m.original_nameservers() == ["10.0.0.53"]  # backup is still the first original
    m.set(None)
    assert path.read_text() == ORIG
    assert _pending(j) == []
    assert m.restore() is False


def test_restart_restores(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    ResolvConfFile(path, j).set(CFG)
    assert ResolvConfFile(path, j).cleanup_leftovers() is True  # a new process after a crash
    assert path.read_text() == ORIG


def test_symlink_is_relinked(tmp_path) -> None:
    target = tmp_path / "stub-resolv.conf"
    target.write_text("nameserver 127.0.0.53\n")
    path = tmp_path / "resolv.conf"
    os.symlink("stub-resolv.conf", path)
    m = ResolvConfFile(path, tmp_path / "run")
    m.set(CFG)
    assert not path.is_symlink() and target.read_text() == "nameserver 127.0.0.53\n"
    assert m.original_nameservers() == ["127.0.0.53"]
    m.set(None)
    assert path.is_symlink() and os.readlink(path) == "stub-resolv.conf"


def test_absent_file_removed_again(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    m = ResolvConfFile(path, tmp_path / "run")
    m.set(CFG)
    assert path.exists()
    m.set(None)
    assert not path.exists()


def test_foreign_change_left_alone(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(ORIG)
    m = ResolvConfFile(path, tmp_path / "run")
    m.set(CFG)
    path.write_text("nameserver 9.9.9.9\n")  # e.g. NetworkManager took over
    assert m.restore() is False
    assert path.read_text() == "nameserver 9.9.9.9\n"


def test_original_nameservers_without_journal_skips_ours(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 100.100.100.100\nnameserver 10.0.0.53\n")
    assert ResolvConfFile(path, tmp_path / "run").original_nameservers() == ["10.0.0.53"]


# -- the journal (engine.recovery.journal.Journal: one Change.file_contents record) ------------


def _pending(j) -> list[Change]:
    return [ch for _cid, ch in Journal(j / "changes.jsonl").pending()]


def _journal(j) -> dict:
    """The one pending resolv.conf record, its original decoded."""
    (ch,) = _pending(j)
    assert ch.kind == "file"
    orig = ch.args["original"]
    return {**ch.args, "original": None if orig is None else base64.b64decode(orig).decode()}


def test_journal_holds_original_before_the_write(tmp_path, monkeypatch) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    seen = []
    real_write = ResolvConfFile._write_in_place

    def spy(self, text):  # at the moment of the first write the journal must already be there
        seen.append(_journal(j))
        real_write(self, text)

    monkeypatch.setattr(ResolvConfFile, "_write_in_place", spy)
    ResolvConfFile(path, j).set(CFG)
    assert seen[0]["original"] == ORIG and seen[0]["written"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen[0]["path"] == str(path)
    assert sorted(p.name for p in j.iterdir()) == ["changes.jsonl"]  # one file, no temp left behind


def test_sigkilled_process_is_undone_by_the_next(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from engine.dns.osconfig import OSDNSConfig\n"
        "from engine.dns.resolvconf_file import ResolvConfFile\n"
        "ResolvConfFile(Path(sys.argv[1]), Path(sys.argv[2])).set(OSDNSConfig(('100.100.100.100',), ('t.example',)))\n"
        "print('set', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(j)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert p.stdout.readline().strip() == "set"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    assert path.read_text().startswith(MARKER)
    assert ResolvConfFile(path, j).cleanup_leftovers() is True
    assert path.read_text() == ORIG and _pending(j) == []


def test_crash_between_truncate_and_write_still_restores(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    ResolvConfFile(path, j).set(CFG)
    path.write_text("")  # O_TRUNC happened, the write did not
    assert ResolvConfFile(path, j).cleanup_leftovers() is True
    assert path.read_text() == ORIG


def test_failed_restore_keeps_the_journal(tmp_path, monkeypatch) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    m = ResolvConfFile(path, j)
    m.set(CFG)

    def boom(self, text):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(ResolvConfFile, "_write_in_place", boom)
    with pytest.raises(OSError):
        m.set(None)
    assert _journal(j)["original"] == ORIG  # never lose the original
    monkeypatch.undo()
    assert ResolvConfFile(path, j).cleanup_leftovers() is True
    assert path.read_text() == ORIG


def test_file_replaced_while_running_becomes_the_original(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    m = ResolvConfFile(path, j)
    m.set(CFG)
    path.write_text("nameserver 9.9.9.9\n")  # e.g. a DHCP client rewrote it
    m.set(OSDNSConfig(("100.100.100.100",), ("other.example",)))
    assert path.read_text().startswith(MARKER)
    assert m.original_nameservers() == ["9.9.9.9"]
    m.set(None)
    assert path.read_text() == "nameserver 9.9.9.9\n"


def test_journal_that_is_not_ours_is_ignored(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    j.mkdir()
    path.write_text(ORIG)
    (j / "changes.jsonl").write_text("[1, 2]\n")  # unreadable as a journal record
    m = ResolvConfFile(path, j)
    assert m.cleanup_leftovers() is False and path.read_text() == ORIG
    m.set(CFG)
    m.set(None)
    assert path.read_text() == ORIG


def test_record_for_another_file_is_refused(tmp_path) -> None:
    """A planted record naming a file the helper does not write is never acted on."""
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    Journal(j / "changes.jsonl").record(Change.file_contents(str(victim), b"pwned\n"))
    assert ResolvConfFile(path, j).cleanup_leftovers() is False  # not its record
    rep = Journal(j / "changes.jsonl", own=OwnChanges(files=frozenset({str(path)}))).recover()
    assert rep.failed and "not one the helper writes" in rep.failed[0]
    assert victim.read_text() == "keep\n"


def test_file_rewritten_by_someone_else_after_a_crash_is_left_alone(tmp_path) -> None:
    path, j = tmp_path / "resolv.conf", tmp_path / "run"
    path.write_text(ORIG)
    ResolvConfFile(path, j).set(CFG)
    path.write_text("nameserver 9.9.9.9\n")  # the DHCP client, while we were dead
    assert ResolvConfFile(path, j).cleanup_leftovers() is False
    assert path.read_text() == "nameserver 9.9.9.9\n" and _pending(j) == []
