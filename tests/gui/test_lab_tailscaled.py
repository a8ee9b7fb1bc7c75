"""The GUI's client and bridge against a real tailscaled's LocalAPI (userspace networking, private netns, NeedsLogin)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from meshgui import menu
from meshgui.bridge import Bridge
from meshgui.engine_client import GUI_WATCH_MASK, EngineClient
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.tailscaled_proc import tailscaled_in_netns, tailscaled_path

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.path.exists(tailscaled_path()), reason="reference tailscaled not built"),
]


@pytest.fixture(scope="module")
def ts_sock():
    with tailscaled_in_netns() as sock:
        yield sock


def test_status_prefs_and_watch(qloop, ts_sock):
    async def main():
        c = EngineClient(ts_sock, timeout=10)
        st = await c.status()
        assert st["BackendState"] == "NeedsLogin" and st["Self"]["HostName"]
        prefs = await c.get_prefs()
        assert prefs["WantRunning"] is False and "ExitNodeID" in prefs
        first = None
        async for n in c.watch(GUI_WATCH_MASK):
            first = n
            break
        assert first["State"] == 2  # ipn.NeedsLogin
        assert first["Prefs"]["LoggedOut"] is True
        # A masked PATCH round-trips and shows up on the bus.
        seen = asyncio.get_running_loop().create_future()

        async def watch():
            async for n in c.watch(0):
                if n.get("Prefs", {}).get("ExitNodeAllowLANAccess") is True:
                    seen.set_result(n)
                    return

        w = asyncio.ensure_future(watch())
        await asyncio.sleep(0.3)
        try:
            got = await c.edit_prefs({"ExitNodeAllowLANAccess": True, "ExitNodeAllowLANAccessSet": True})
            assert got["ExitNodeAllowLANAccess"] is True
            await asyncio.wait_for(seen, 20)
        finally:
            w.cancel()
            await c.edit_prefs({"ExitNodeAllowLANAccess": False, "ExitNodeAllowLANAccessSet": True})
    run(qloop, main())


def test_bridge_shows_needs_login_with_real_tailscaled(qloop, ts_sock):
    async def main():
        b = Bridge(EngineClient(ts_sock, timeout=10))
        task = asyncio.ensure_future(b.run())
        try:
            await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN and b.state.self_node.name,
                             what="NeedsLogin from tailscaled")
            items = menu.build(b.state, now=b._clock())
            assert [i.text for i in items][:3] == ["Logged out", "", "Log in…"]
            assert b.state.version.startswith("1.")
        finally:
            b.stop()
            await asyncio.wait_for(task, 10)
    run(qloop, main())


@pytest.mark.xfail(strict=False, reason="rare race (about 1 in 20): tailscaled answers 403 and closes before reading "
                   "the request body; the client now tolerates the failed write, but the answer can still be lost "
                   "when the close arrives first. Passes reliably with our helper (tests/gui/test_our_helper.py).")
def test_non_operator_gets_403_and_read_only(ts_sock):
    """tailscaled answers a write from an unprivileged, non-operator uid with 403: our client maps it to AccessDenied."""
    code = (
        "import asyncio, json\n"
        "from meshgui.engine_client import EngineClient, AccessDenied\n"
        "async def main():\n"
        f"    c = EngineClient({ts_sock!r})\n"
        "    st = await c.status()\n"
        "    try:\n"
        "        await c.edit_prefs({'WantRunning': True, 'WantRunningSet': True})\n"
        "        return {'state': st['BackendState'], 'denied': False}\n"
        "    except AccessDenied as e:\n"
        "        return {'state': st['BackendState'], 'denied': True, 'status': e.status}\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The venv interpreter lives under /root (unreadable for nobody): use the system 3.11 with the venv's
    # pure-Python packages (h11) on the path.
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         user=65534, group=65534, env={"PYTHONPATH": f"{root}:{site}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {"state": "NeedsLogin", "denied": True, "status": 403}
