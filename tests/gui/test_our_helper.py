"""The GUI against our own helper (`mesh-helper serve`, fake engine): login, peers, exit node, pings, keys, 403."""

from __future__ import annotations

import asyncio
import os

import pytest

from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.keys import PrivateKey
from meshgui.state import PathKind, TrayState
from tests.gui.aio import run, wait_until
from tests.gui.helper_proc import our_helper
from tests.gui.nobody import status_then_write_as_nobody


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
            assert info.source == "gui"
            hand_keys.public = info.node_public

        b = Bridge(client, on_connected=hand_keys)
        task = asyncio.ensure_future(b.run())
        try:
            await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN, what="NeedsLogin")
            b.login()
            await wait_until(
                lambda: b.state.tray is TrayState.CONNECTED and len(b.state.peers) == 3,
                what="Running with the fake tailnet",
            )
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
    assert status_then_write_as_nobody(helper_sock) == {"state": "NeedsLogin", "denied": True, "status": 403}
