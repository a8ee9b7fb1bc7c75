"""The GUI against our own helper (`mesh-helper serve --engine fake`): login, peers, exit node, pings, keys, 403."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.keys import PrivateKey
from meshgui.state import PathKind, TrayState
from tests.gui.aio import run, wait_until
from tests.gui.helper_proc import ROOT, our_helper


@pytest.fixture
def helper_sock():
    with our_helper() as sock:
        yield sock


def test_login_peers_exit_node_pings_and_keys(qloop, helper_sock):
    async def main():
        client = EngineClient(helper_sock, timeout=10)
        machine, node = PrivateKey.generate(), PrivateKey.generate()

        async def hand_keys():
            info = await client.set_keys({"MachineKey": machine.to_text(), "NodeKey": node.to_text()})
            assert info["Source"] == "gui"
            hand_keys.public = info["NodePublic"]

        b = Bridge(client, on_connected=hand_keys)
        task = asyncio.ensure_future(b.run())
        try:
            await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN, what="NeedsLogin")
            b.login()
            await wait_until(lambda: b.state.tray is TrayState.CONNECTED and len(b.state.peers) == 3,
                             what="Running with the fake tailnet")
            assert b.state.account == "alice@example.com"
            names = [p.name for p in b.state.peers]
            assert names[-1] == "offline1", "offline peers sort last"
            peer1 = next(p for p in b.state.peers if p.name == "peer1")
            assert (peer1.path, peer1.path_detail) == (PathKind.DIRECT, "192.0.2.2:41641")
            exit1 = next(p for p in b.state.peers if p.name == "exit1")
            assert exit1.exit_node_option and [p.name for p in b.state.exit_options] == ["exit1"]
            b.ping_peers(b.state.peers)
            await wait_until(lambda: next(p for p in b.state.peers if p.name == "exit1").latency_ms, what="ping")
            exit1 = next(p for p in b.state.peers if p.name == "exit1")
            assert exit1.path_text == "relay fra 25 ms"
            b.set_exit_node(exit1.id)
            await wait_until(lambda: b.state.tray is TrayState.EXIT_NODE, what="exit node in use")
            b.set_allow_lan(True)
            await wait_until(lambda: b.state.allow_lan, what="LAN access")
            b.disconnect_vpn()
            await wait_until(lambda: b.state.tray is TrayState.STOPPED, what="stopped")
            b.connect_vpn()
            await wait_until(lambda: b.state.tray is TrayState.EXIT_NODE, what="back with the exit node")
            assert hand_keys.public.startswith("nodekey:")
            b.logout()
            await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN, what="logged out")
        finally:
            b.stop()
            await asyncio.wait_for(task, 10)
    run(qloop, main(), timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged uid")
def test_non_operator_is_read_only(helper_sock):
    code = (
        "import asyncio, json\n"
        "from meshgui.engine_client import EngineClient, AccessDenied\n"
        "async def main():\n"
        f"    c = EngineClient({helper_sock!r})\n"
        "    st = await c.status()\n"
        "    try:\n"
        "        await c.edit_prefs({'WantRunning': True, 'WantRunningSet': True})\n"
        "        return {'state': st['BackendState'], 'denied': False}\n"
        "    except AccessDenied as e:\n"
        "        return {'state': st['BackendState'], 'denied': True, 'status': e.status}\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         user=65534, group=65534, env={"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"state": "NeedsLogin", "denied": True, "status": 403}
