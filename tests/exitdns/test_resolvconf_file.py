"""ResolvConfFile on a temporary path: backup, idempotent set, restore, symlink/absent/foreign-change cases."""

from __future__ import annotations

import os

from engine.dns.osconfig import OSDNSConfig
from engine.dns.resolvconf_file import MARKER, ResolvConfFile

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
    assert not any(j.iterdir())
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
