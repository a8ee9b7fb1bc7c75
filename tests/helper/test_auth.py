"""Authorization by SO_PEERCRED: other local users are read-only; root and the operator (user/group/pref) may write."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helper.conftest import TAILSCALE, HelperProc, meshctl, tailscale_cli

pytestmark = pytest.mark.lab  # needs root: creates users, switches uid

SET_KEYS = """
import asyncio, sys
from engine.types.keys import MachinePrivate, NodePrivate
from engine.localapi.client import LocalClient, AccessDenied
async def main():
    c = LocalClient(sys.argv[1])
    try:
        info = await c.set_keys(MachinePrivate.generate().to_text(), NodePrivate.generate().to_text())
    except AccessDenied as e:
        print("DENIED", e.message); return
    print("OK", info.node_public)
asyncio.run(main())
"""


def prefs_as_root(sock: str) -> dict:
    p = meshctl(sock, "--json", "status")
    assert p.returncode in (0, 5), p.stderr
    out = tailscale_cli(sock, "debug", "prefs") if TAILSCALE.exists() else None
    return json.loads(out.stdout) if out is not None else {}


def test_other_user_can_read_but_not_change(helper, make_user):
    u = make_user()
    p = meshctl(helper.socket, "up", "--login-server", "http://control.invalid", "--timeout", "20")
    assert p.returncode == 0, p.stderr  # root brings it up

    p = meshctl(helper.socket, "status", user=u)
    assert p.returncode == 0, p.stderr
    assert "peer1" in p.stdout

    p = meshctl(helper.socket, "down", user=u)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "access denied" in p.stderr and f"user {u.name} (uid {u.uid})" in p.stderr
    assert "only root" in p.stderr

    p = meshctl(helper.socket, "exit-node", "set", "exit1", user=u)
    assert p.returncode == 4

    p = u.run(sys.executable, "-c", SET_KEYS, helper.socket)
    assert p.stdout.startswith("DENIED"), p.stdout + p.stderr
    assert "privkey" not in p.stdout + p.stderr

    if TAILSCALE.exists():
        p = tailscale_cli(helper.socket, "status", "--json", user=u)
        assert p.returncode == 0 and json.loads(p.stdout)["BackendState"] == "Running"
        p = tailscale_cli(helper.socket, "down", user=u)
        assert p.returncode != 0 and "Access denied" in p.stderr
        p = tailscale_cli(helper.socket, "logout", user=u)
        assert p.returncode != 0 and "Access denied" in p.stderr
        assert prefs_as_root(helper.socket)["WantRunning"] is True
        p = tailscale_cli(helper.socket, "set", "--operator=" + u.name, user=u)
        assert p.returncode != 0

    assert "denied PATCH /localapi/v0/prefs" in helper.log()


def test_operator_user_may_change_things(shared_dir, make_user):
    op, other = make_user(), make_user()
    h = HelperProc(shared_dir, "--operator", op.name).start()
    try:
        p = meshctl(h.socket, "up", "--login-server", "http://control.invalid", "--timeout", "20", user=op)
        assert p.returncode == 0, p.stderr
        p = meshctl(h.socket, "down", user=op)
        assert p.returncode == 0, p.stderr
        p = op.run(sys.executable, "-c", SET_KEYS, h.socket)
        assert p.stdout.startswith("OK nodekey:"), p.stdout + p.stderr
        p = meshctl(h.socket, "up", "--timeout", "20", user=other)
        assert p.returncode == 4
        p = meshctl(h.socket, "up", "--timeout", "20", user=op)
        assert p.returncode == 0, p.stderr
    finally:
        assert h.stop() == 0


def test_operator_group_and_operator_pref(shared_dir, make_user):
    member = make_user(group="mvtestops")
    outsider = make_user()
    h = HelperProc(shared_dir, "--operator", ":mvtestops").start()
    try:
        p = meshctl(h.socket, "up", "--login-server", "http://control.invalid", "--timeout", "20", user=member)
        assert p.returncode == 0, p.stderr
        p = meshctl(h.socket, "down", user=outsider)
        assert p.returncode == 4 and "operator group 'mvtestops'" in p.stderr
        if TAILSCALE.exists():
            # root grants the outsider operator rights through the OperatorUser pref
            p = tailscale_cli(h.socket, "set", f"--operator={outsider.name}")
            assert p.returncode == 0, p.stderr
            p = meshctl(h.socket, "down", user=outsider)
            assert p.returncode == 0, p.stderr
            # ... but an operator cannot hand operator rights to someone else
            p = tailscale_cli(h.socket, "set", f"--operator={member.name}", user=outsider)
            assert p.returncode != 0 and "only root" in p.stderr
    finally:
        assert h.stop() == 0
