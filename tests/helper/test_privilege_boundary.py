"""Attacks on the helper's privilege boundary by a real unprivileged user: planted journals, chosen paths, pkexec."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from engine.recovery.journal import Change, Journal, OwnChanges
from tests.helper.conftest import REPO, HelperProc, helper_env

PY = sys.executable


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "tests.support.fake_helper", "serve", *args],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rec(cid: int, change: Change) -> str:
    return json.dumps({"op": "rec", "id": cid, "change": change.to_dict()}) + "\n"


@pytest.fixture
def user_dir(make_user):
    """A directory under /tmp owned by a fresh unprivileged user, who plants files in it themselves."""
    user = make_user()
    d = Path("/tmp") / f"mvt-attack-{uuid.uuid4().hex[:8]}"
    try:
        r = user.run(
            "sh",
            "-c",
            f"mkdir -m 0755 {d} && printf '%s' \"$1\" > {d}/changes.jsonl",
            "sh",
            rec(1, Change.file_contents("/etc/shadow", b"pwned\n")),
        )
        assert r.returncode == 0, r.stderr
        yield user, d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


# ---------------------------------------------------------------- user-chosen paths are refused


@pytest.mark.parametrize(
    "flag,name",
    [("--journal", "changes.jsonl"), ("--state", "state.json"), ("--prefs", "prefs.json"), ("--socket", "helper.sock")],
)
def test_serve_refuses_paths_in_a_user_writable_directory(user_dir, shared_dir, flag, name):
    _, d = user_dir
    args = {"--journal": str(shared_dir / "j.jsonl"), "--socket": str(shared_dir / "h.sock")}
    args[flag] = str(d / name)
    r = serve(*[x for kv in args.items() for x in kv], *((flag, str(d / name)) if flag not in args else ()))
    assert r.returncode == 2
    assert f"refusing {flag} {d / name}: directory {d} is not owned by root" in r.stderr
    assert "Traceback" not in r.stderr and not (shared_dir / "j.jsonl").exists()  # refused before acting


def test_serve_refuses_world_writable_and_sticky_directories(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    r = serve("--journal", str(open_dir / "j.jsonl"), "--socket", str(tmp_path / "s.sock"))
    assert r.returncode == 2 and f"directory {open_dir} is writable by other users" in r.stderr
    # /tmp itself: sticky, but anyone can pre-create the file name there
    r = serve("--journal", f"/tmp/mvt-{uuid.uuid4().hex[:6]}.jsonl", "--socket", str(tmp_path / "s.sock"))
    assert r.returncode == 2 and "directory /tmp is writable by other users" in r.stderr


def test_serve_refuses_a_user_writable_run_dir(user_dir, shared_dir):
    _, d = user_dir
    r = serve("--journal", str(shared_dir / "j.jsonl"), "--socket", str(shared_dir / "h.sock"), "--run-dir", str(d))
    assert r.returncode == 2 and "refusing --run-dir" in r.stderr and "is not owned by root" in r.stderr
    assert "Traceback" not in r.stderr and not (shared_dir / "j.jsonl").exists()


def test_the_removed_headless_mode_names_its_replacement_and_touches_nothing(tmp_path):
    state = tmp_path / "s.json"
    r = subprocess.run(
        [
            PY,
            "-m",
            "engine.cli.helper",
            "--login-server",
            "http://127.0.0.1:1",
            "--state",
            str(state),
            "--auth-key",
            "file:/nonexistent",
        ],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "mesh-helper serve --state FILE" in r.stderr
    assert "meshctl up --login-server URL --auth-key file:PATH" in r.stderr
    assert not state.exists()


# ---------------------------------------------------------------- crafted journals are refused


def test_journal_owned_by_a_user_is_refused_unread(make_user, shared_dir):
    user = make_user()
    journal = shared_dir / "changes.jsonl"
    canary = shared_dir / "canary"
    canary.write_text("original\n")
    journal.write_text(rec(1, Change.file_contents(str(canary), b"pwned\n")))
    os.chown(journal, user.uid, -1)
    h = HelperProc(shared_dir).start()
    try:
        assert "is not owned by root" in h.log() and "refused journal" in h.log()
    finally:
        h.stop()
    assert canary.read_text() == "original\n"
    assert (shared_dir / "changes.jsonl.rejected").exists()


def test_world_writable_journal_is_refused_unread(make_user, shared_dir):
    user = make_user()
    journal = shared_dir / "changes.jsonl"
    journal.write_text("")
    journal.chmod(0o666)  # root's file, but anyone may append to it ...
    canary = shared_dir / "canary"
    canary.write_text("original\n")
    r = user.run(
        "sh", "-c", f"printf '%s' \"$1\" >> {journal}", "sh", rec(1, Change.file_contents(str(canary), b"pwned\n"))
    )  # ... and the user does
    assert r.returncode == 0, r.stderr
    h = HelperProc(shared_dir).start()
    try:
        assert "writable by other users" in h.log() and "refused journal" in h.log()
    finally:
        h.stop()
    assert canary.read_text() == "original\n"


@pytest.mark.lab
def test_journal_naming_shadow_and_foreign_sysctls_only_undoes_our_changes(lab):
    """A root-owned 0600 journal (as if root were tricked into writing it): only the helper's own kinds of
    change are undone (its TUN, its forwarding sysctl); /etc/shadow, a foreign sysctl, a foreign
    interface, rule and nft table are refused. Runs in a netns: sysctls and links are the lab's."""
    host = lab.host("pbj")
    host.run(["ip", "tuntap", "add", "dev", "meshvpn0", "mode", "tun"])
    host.run(["ip", "tuntap", "add", "dev", "victim0", "mode", "tun"])
    host.run(["ip", "rule", "add", "priority", "100", "table", "100"])
    host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    ttl = host.run(["sysctl", "-n", "net.ipv4.ip_default_ttl"]).stdout.strip()
    shadow = Path("/etc/shadow")
    canary = lab.dir / "canary"
    canary.write_text("original\n")
    changes = [
        Change.link("meshvpn0"),
        Change.sysctl("net.ipv4.ip_forward", "0"),
        # the same bytes: even a broken check could not damage the machine, only show in the log
        Change.file_contents(str(shadow), shadow.read_bytes()),
        Change.file_contents(str(canary), b"pwned\n"),
        Change.sysctl("net.ipv4.ip_default_ttl", "7"),
        Change.link("victim0"),
        Change.rule(100, table=100),
        Change.nft_table("inet", "filter"),
    ]
    journal = lab.dir / "changes.jsonl"
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(rec(i + 1, c) for i, c in enumerate(changes)))
    p = host.run(
        [PY, "-m", "engine.cli.helper", "serve", "--cleanup-only", "--journal", str(journal)],
        env={"PYTHONPATH": str(REPO)},
        check=False,
    )
    assert "2 undone, 6 failed" in p.stderr, p.stderr[-3000:]
    for what in (
        "file '/etc/shadow' is not one the helper writes",
        "sysctl 'net.ipv4.ip_default_ttl'",
        "interface 'victim0' is not ours",
        "rule priority 100",
        "nft table inet filter",
    ):
        assert what in p.stderr, what
    assert "restored /etc/shadow" not in p.stderr  # (its inode is no witness: useradd elsewhere rewrites it)
    assert canary.read_text() == "original\n"
    assert host.run(["sysctl", "-n", "net.ipv4.ip_default_ttl"]).stdout.strip() == ttl
    assert host.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"  # ours: restored
    links = host.run(["ip", "-o", "link", "show"]).stdout
    assert "meshvpn0" not in links and "victim0" in links
    assert "100:" in host.run(["ip", "rule", "show"]).stdout


def test_journal_api_refuses_foreign_changes_without_running_anything(tmp_path):
    calls = []
    path = tmp_path / "j.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(rec(1, Change("exec", {"argv": ["sh", "-c", "touch /tmp/pwned"]})))
        f.write(rec(2, Change.route("0.0.0.0/0", dev="eth0", table="main")))
        f.write(rec(3, Change.rule(5270, table=52, extra=["--force"])))
        f.write('{"op":"rec","id":4,"change":["not", "an", "object"]}\n')
    rep = Journal(path, run=lambda argv: calls.append(argv) or (0, ""), own=OwnChanges()).recover()
    assert calls == [] and rep.undone == []
    assert len(rep.failed) == 3 and rep.corrupt_lines == 1 and all(m.startswith("refused: ") for m in rep.failed)


# ---------------------------------------------------------------- state/status files: O_EXCL temp names, 0600


def test_state_file_writes_ignore_planted_temp_names(tmp_path):
    from engine.ipn.engine_api import NodeKeys
    from engine.ipn.store import FileStore
    from engine.localapi.schema import Prefs
    from engine.types.keys import MachinePrivate, NodePrivate

    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    state = tmp_path / "node.state"
    for old_tmp in (f".{state.name}.tmp", f"{state.name}.tmp"):  # the fixed names used before
        (tmp_path / old_tmp).symlink_to(victim)
    old = os.umask(0)
    try:
        FileStore(state, keep_keys=True).save(
            Prefs(), NodeKeys(MachinePrivate.generate(), NodePrivate.generate(), source="state-file")
        )
    finally:
        os.umask(old)
    assert victim.read_text() == "untouched\n"
    assert oct(os.stat(state).st_mode & 0o777) == "0o600"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


# ---------------------------------------------------------------- the GUI asks pkexec for the wrapper only


def test_pkexec_strategy_runs_only_the_argumentless_wrapper(tmp_path, monkeypatch):
    from meshgui.supervisor import PKEXEC_WRAPPER, Pkexec, default_strategies

    log = tmp_path / "argv"
    fake = tmp_path / "pkexec"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    strategies = default_strategies("/run/meshvpn/meshvpn.sock")
    pk = next(s for s in strategies if isinstance(s, Pkexec))
    assert pk.wrapper == PKEXEC_WRAPPER and not hasattr(pk, "command")

    async def go():
        await pk.start()
        await pk.proc.wait()

    asyncio.run(go())
    assert log.read_text().splitlines() == [PKEXEC_WRAPPER]


def test_wrapper_takes_no_arguments():
    wrapper = REPO / "resources/polkit/mesh-helper-start"
    r = subprocess.run(["sh", str(wrapper), "--journal", "/tmp/x"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "takes no arguments" in r.stderr
    text = wrapper.read_text()
    assert '"$@"' not in text and "$1" not in text and "env -i" in text
