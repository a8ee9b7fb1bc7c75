"""`--auth-key file:PATH`: the key is never in `ps` (seen as a real unprivileged user); literal keys get a warning."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import time

import pytest

from engine.fs import authkey
from tests.control.nodes import start_serve, wait_until
from tests.helper.conftest import REPO, helper_env, meshctl
from tests.helper.keyfile import key_file_arg
from tests.lab.netlab import Host


def fake_key() -> str:
    return f"tskey-auth-test{secrets.token_hex(12)}"


def test_file_form_reads_the_key_and_literal_warns(tmp_path):
    key = fake_key()
    arg = key_file_arg(key + "\n", tmp_path)
    err = io.StringIO()
    assert authkey.resolve(arg, warn=err) == key and err.getvalue() == ""
    assert authkey.resolve(key, warn=err) == key and "visible to every local user" in err.getvalue()
    assert key not in err.getvalue()
    assert authkey.resolve("", warn=err) is None


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: None, "cannot read auth key file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b"x" * 5000), "too large"),
        (lambda p: p.write_text(""), "does not hold one auth key"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "not text"),
    ],
)
def test_bad_key_files_are_clear_errors(tmp_path, setup, message):
    path = tmp_path / "key"
    setup(path)
    with pytest.raises(authkey.AuthKeyError, match=message):
        authkey.resolve(f"file:{path}", warn=io.StringIO())


def test_group_readable_key_file_is_warned_about(tmp_path):
    path = tmp_path / "key"
    path.write_text(fake_key())
    path.chmod(0o644)
    err = io.StringIO()
    authkey.resolve(f"file:{path}", warn=err)
    assert "readable by other users" in err.getvalue()


def test_up_reports_a_missing_key_file_without_a_traceback(helper, tmp_path):
    r = meshctl(helper.socket, "up", "--login-server", "http://127.0.0.1:1", "--auth-key", f"file:{tmp_path}/missing")
    assert r.returncode == 2 and "cannot read auth key file" in r.stderr and "Traceback" not in r.stderr


def test_meshctl_reports_a_missing_key_file(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli.meshctl",
            "--socket",
            str(tmp_path / "none.sock"),
            "up",
            "--auth-key",
            f"file:{tmp_path}/missing",
        ],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr


def _up(host, lab, key_arg: str, tun: str):
    """`mesh-helper serve` (the real engine) in ``host``, then `meshctl up` with ``key_arg``: up waits for a
    control server that never answers, so its argv stays in `ps`."""
    sock = lab.dir / f"{tun}.sock"
    helper = start_serve(host, sock, lab.dir / f"run-{tun}", tun=tun)
    up = host.popen_python(
        "engine.cli.meshctl",
        "--socket",
        str(sock),
        "up",
        "--login-server",
        "http://127.0.0.1:1",
        "--auth-key",
        key_arg,
        "--timeout",
        "60",
        module=True,
    )
    return helper, up


def _ps_as(user) -> str:
    r = user.run("ps", "-eo", "pid,args", "--width", "4096")
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.lab
def test_ps_shows_no_key_for_a_node_started_with_the_file_form(lab, make_user):
    user = make_user()
    host = lab.host("pbk")
    key, literal = fake_key(), fake_key()
    arg = key_file_arg(key, lab.dir)
    helper, proc = _up(host, lab, arg, "mesh0")
    helper_lit, proc_lit = _up(host, lab, literal, "mesh1")
    wait_until(
        lambda: "visible to every local user" in Host.log_of(proc_lit) or proc_lit.poll() is not None,
        "meshctl's warning about the literal key",
    )
    time.sleep(1.5)
    assert proc.poll() is None and proc_lit.poll() is None, Host.log_of(proc)[-2000:] + Host.log_of(proc_lit)[-2000:]
    ps = _ps_as(user)
    lines = [ln for ln in ps.splitlines() if ln.split(None, 1)[0] == str(proc.pid)]
    assert lines and arg in lines[0], "meshctl is not visible to the user at all"
    assert key not in ps, "the file-form key leaked into ps"
    # what the file form prevents: the literal key is right there for any user (and it is warned about)
    assert literal in ps, "expected the literal key to be visible (the attack this guards against)"
    assert "visible to every local user" in Host.log_of(proc_lit)
    assert "visible to every local user" not in Host.log_of(proc)
    for p in (proc, proc_lit):
        p.terminate()
        p.wait(timeout=20)
    for h in (helper, helper_lit):  # the helpers got the keys over the LocalAPI: never logged
        assert key not in Host.log_of(h) and literal not in Host.log_of(h)
        h.terminate()
        assert h.wait(timeout=30) == 0, Host.log_of(h)[-2000:]
    assert os.stat(arg[5:]).st_mode & 0o777 == 0o600
