"""Hygiene journal: record/forget/recover with a recording runner (unit), and SIGKILL recovery in a netns (lab)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from engine.recovery.journal import COMPACT_AFTER_LINES, Change, Journal, OwnChanges
from tests.helper.conftest import REPO, meshctl

OWN = OwnChanges(links=frozenset({"mv0", "mv1", "gone0", "ok0", "x"}))  # what these tests' journals may undo


class Runner:
    """Records argv; `gone` holds argv prefixes that fail as 'already gone'."""

    def __init__(self, fail: dict[str, str] | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail or {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        key = " ".join(argv)
        for frag, err in self.fail.items():
            if frag in key:
                return 2, err
        return 0, ""


def test_recover_undoes_newest_first_and_empties(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, own=OWN, run=Runner())
    a = j.record(Change.link("mv0"))
    b = j.record(Change.route("100.64.0.0/10", dev="mv0", table=52))
    j.record(Change.rule(5270, table=52))
    j.record(Change.nft_table("inet", "meshvpn"))
    j.forget(b)
    assert [c for c, _ in j.pending()] == [a, 3, 4]
    # a new process after a crash
    r = Runner()
    rep = Journal(path, own=OWN, run=r).recover()
    assert r.calls == [
        ["nft", "delete", "table", "inet", "meshvpn"],
        ["ip", "-4", "rule", "del", "priority", "5270", "table", "52"],
        ["ip", "link", "del", "dev", "mv0"],
    ]
    assert len(rep.undone) == 3 and rep.failed == []
    # idempotent: nothing left to do
    r2 = Runner()
    assert Journal(path, own=OWN, run=r2).recover().undone == [] and r2.calls == []


def test_already_gone_counts_as_undone_real_failures_are_reported(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, own=OWN, run=Runner())
    j.record(Change.link("gone0"))
    j.record(Change.route("10.9.0.0/16", dev="x", table=52))
    r = Runner({"link del": 'Cannot find device "gone0"', "route del": "RTNETLINK answers: Operation not permitted"})
    rep = Journal(path, own=OWN, run=r).recover()
    assert rep.undone == ["already gone: ip link del dev gone0"]
    assert rep.failed and "Operation not permitted" in rep.failed[0]


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, own=OWN, run=Runner())
    j.record(Change.link("mv1"))
    with open(path, "a") as f:
        f.write('{"op":"rec","id":2,"change":{"kind":"li')  # crash mid-write
    r = Runner()
    rep = Journal(path, own=OWN, run=r).recover()
    assert rep.corrupt_lines == 1 and r.calls == [["ip", "link", "del", "dev", "mv1"]]


def test_apply_records_first_and_rolls_back_on_failure(tmp_path):
    path = tmp_path / "j.jsonl"
    r = Runner({"rule add": "RTNETLINK answers: File exists"})
    j = Journal(path, own=OWN, run=r)
    with pytest.raises(OSError, match="File exists"):
        j.apply(Change.rule(5270, table=52), ["ip", "-4", "rule", "add", "priority", "5270", "table", "52"])
    assert j.pending() == []
    cid = j.apply(Change.link("ok0"), ["ip", "tuntap", "add", "dev", "ok0", "mode", "tun"])
    assert j.revert(cid)[0] and j.pending() == []


def test_file_and_sysctl_changes_restore(tmp_path):
    target = tmp_path / "resolv.conf"
    target.write_text("nameserver 192.0.2.53\n")
    path = tmp_path / "j.jsonl"
    own = OwnChanges(files=frozenset({str(tmp_path / "resolv.conf"), str(tmp_path / "created-by-us")}))
    j = Journal(path, own=own, run=Runner())
    j.record(Change.file_contents(str(target), target.read_bytes()))
    target.write_text("nameserver 100.100.100.100\n")
    new = tmp_path / "created-by-us"
    j.record(Change.file_contents(str(new), None))
    new.write_text("x")
    Journal(path, own=own, run=Runner()).recover()
    assert target.read_text() == "nameserver 192.0.2.53\n"
    assert not new.exists()


def test_recover_with_select_undoes_only_those(tmp_path):
    """A subsystem's start-up cleanup recovers its own kinds of change; the others stay recorded."""
    path = tmp_path / "j.jsonl"
    j = Journal(path, own=OWN, run=Runner())
    j.record(Change.link("mv0"))
    j.record(Change.route("default", table=52, family=6))
    r = Runner()
    rep = Journal(path, own=OWN, run=r).recover(select=lambda ch: ch.kind == "route")
    assert r.calls == [["ip", "-6", "route", "del", "default", "table", "52"]]
    assert [ch.kind for ch in rep.changes] == ["route"]
    assert [ch.kind for _c, ch in Journal(path, own=OWN, run=Runner()).pending()] == ["link"]


def test_exit_router_and_forwarder_changes_undo(tmp_path):
    r = Runner()
    j = Journal(tmp_path / "j.jsonl", own=OWN, run=r)
    j.record(Change.rule(5210, table="main", family=6, extra=["fwmark", "0x80000/0xff0000"]))
    j.record(Change.rule(5250, family=4, extra=["fwmark", "0x80000/0xff0000", "unreachable"]))
    j.record(Change.sysctl("net.ipv4.ip_forward", "0"))
    j.record(Change.rule(5230, table="100"))  # a table that is neither ours nor main/default: refused
    rep = j.recover()
    assert r.calls == [
        ["sysctl", "-qw", "net.ipv4.ip_forward=0"],
        ["ip", "-4", "rule", "del", "priority", "5250", "fwmark", "0x80000/0xff0000", "unreachable"],
        ["ip", "-6", "rule", "del", "priority", "5210", "table", "main", "fwmark", "0x80000/0xff0000"],
    ]
    assert rep.failed == ["refused: rule table '100' is not ours"]


def test_file_change_with_hash_restores_only_while_ours(tmp_path):
    import hashlib

    target = tmp_path / "resolv.conf"
    own = OwnChanges(files=frozenset({str(target)}))
    ours = b"nameserver 100.100.100.100\n"
    sha = hashlib.sha256(ours).hexdigest()
    for now, restored in ((ours, True), (b"", True), (b"nameserver 9.9.9.9\n", False)):
        target.write_bytes(now)
        j = Journal(tmp_path / "j.jsonl", own=own, run=Runner())
        j.record(Change.file_contents(str(target), b"nameserver 192.0.2.53\n", written=sha))
        rep = Journal(tmp_path / "j.jsonl", own=own, run=Runner()).recover()
        assert rep.failed == []
        assert target.read_bytes() == (b"nameserver 192.0.2.53\n" if restored else now)
    target.write_bytes(ours)
    Journal(tmp_path / "j.jsonl", own=own).record(Change.file_contents(str(target), None, symlink="stub", written=sha))
    Journal(tmp_path / "j.jsonl", own=own).recover()
    assert target.is_symlink() and os.readlink(target) == "stub"
    bad = Change.file_contents(str(target), None, symlink="x", written="not-a-hash")
    assert bad.refusal(own) == "bad hash of the written file"


def test_journal_is_compacted(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, own=OWN, run=Runner())
    keep = j.record(Change.link("keep0"))
    for i in range(COMPACT_AFTER_LINES):
        j.forget(j.record(Change.link(f"t{i}")))
    lines = path.read_text().splitlines()
    assert len(lines) < COMPACT_AFTER_LINES
    assert [c for c, _ in Journal(path, own=OWN, run=Runner()).pending()] == [keep]
    assert all(json.loads(ln) for ln in lines)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


# ---------------------------------------------------------------- lab: SIGKILL recovery in a netns

TUN = "mvhyg0"


def leftovers(host) -> dict[str, str]:
    return {
        "link": host.run(["ip", "-o", "link", "show"]).stdout,
        "route": host.run(["ip", "route", "show", "table", "52"], check=False).stdout,
        "rule": host.run(["ip", "-4", "rule", "show"]).stdout,
    }


def counts(host) -> tuple[int, int, int]:
    lo = leftovers(host)
    return (lo["link"].count(f"{TUN}:"), lo["route"].count("100.64.0.0/10"), lo["rule"].count("5270:"))


class NsHelper:
    def __init__(self, host, workdir):
        self.host = host
        self.sock = str(workdir / "h.sock")
        self.journal = str(workdir / "changes.jsonl")
        self.proc = None

    def start(self):
        self.proc = self.host.popen(
            [
                sys.executable,
                "-m",
                "tests.support.fake_helper",
                "serve",
                "--fake-system",
                "--tun",
                TUN,
                "--socket",
                self.sock,
                "--journal",
                self.journal,
            ],
            env={"MESH_TESTING": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
            cwd=str(REPO),
        )
        deadline = time.monotonic() + 20
        while "mesh-helper ready" not in self.host.log_of(self.proc):
            assert self.proc.poll() is None, self.host.log_of(self.proc)[-3000:]
            assert time.monotonic() < deadline, self.host.log_of(self.proc)[-3000:]
            time.sleep(0.05)
        return self

    def up(self):
        p = meshctl(self.sock, "up", "--login-server", "http://control.invalid", "--timeout", "20")
        assert p.returncode == 0, p.stderr + self.host.log_of(self.proc)[-2000:]

    def kill(self, sig=signal.SIGKILL):
        os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=15)
        return self.proc.returncode


@pytest.mark.lab
def test_sigkill_while_running_leaves_nothing_after_next_start(lab):
    host = lab.host("hyg")
    h = NsHelper(host, lab.dir).start()
    h.up()
    assert counts(host) == (1, 1, 1)
    h.kill()
    assert counts(host) == (1, 1, 1)  # the crash left them behind ...
    h.start()
    assert counts(host) == (0, 0, 0)  # ... and the next start removed them
    assert "cleaned up after a previous run: 3 undone, 0 failed" in host.log_of(h.proc)
    h.up()
    assert counts(host) == (1, 1, 1)
    assert h.kill(signal.SIGTERM) == 0  # graceful: cleans up itself
    assert counts(host) == (0, 0, 0)
    assert Journal(h.journal).pending() == []


@pytest.mark.lab
def test_twenty_kill_cycles_leave_nothing_duplicated(lab):
    host = lab.host("hyc")
    h = NsHelper(host, lab.dir)
    for i in range(20):
        h.start()
        assert counts(host) == (0, 0, 0), f"cycle {i}: leftovers after start"
        h.up()
        assert counts(host) == (1, 1, 1), f"cycle {i}: duplicates while running"
        h.kill()
    h.start()
    assert counts(host) == (0, 0, 0)
    assert len(open(h.journal).read().splitlines()) == 0
    assert h.kill(signal.SIGTERM) == 0


@pytest.mark.lab
def test_cleanup_only_mode_for_systemd_exec_stop_post(lab):
    host = lab.host("hyx")
    h = NsHelper(host, lab.dir).start()
    h.up()
    h.kill()
    assert counts(host) == (1, 1, 1)
    p = host.run(
        [sys.executable, "-m", "engine.cli.helper", "serve", "--cleanup-only", "--tun", TUN, "--journal", h.journal],
        env={"PYTHONPATH": str(REPO)},
    )
    assert "3 undone, 0 failed" in p.stderr
    assert counts(host) == (0, 0, 0)


@pytest.mark.lab
def test_cleanup_also_runs_the_exit_router_journal(lab):
    """Exit-node rules/routes left by a SIGKILLed helper are removed by the next start's recovery."""
    host = lab.host("hye")
    host.run(["ip", "tuntap", "add", "dev", "mesh0", "mode", "tun"])
    host.run(["ip", "link", "set", "mesh0", "up"])
    rules_before = host.run(["ip", "-4", "rule", "show"]).stdout
    code = (
        "import sys; from pathlib import Path; from engine.router.exitnode import ExitRouter, ExitRouteConfig;"
        "ExitRouter(journal_dir=Path(sys.argv[1])).set(ExitRouteConfig('mesh0', ipv6=False))"
    )
    host.exec_python(code, str(lab.dir))
    assert "lookup 52" in host.run(["ip", "-4", "rule", "show"]).stdout
    p = host.run(
        [
            sys.executable,
            "-m",
            "engine.cli.helper",
            "serve",
            "--cleanup-only",
            "--journal",
            str(lab.dir / "changes.jsonl"),
        ],
        env={"PYTHONPATH": str(REPO)},
    )
    assert "0 failed" in p.stderr, p.stderr
    assert host.run(["ip", "-4", "rule", "show"]).stdout == rules_before
    assert "default" not in host.run(["ip", "route", "show", "table", "52"], check=False).stdout
