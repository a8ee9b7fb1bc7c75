"""The same network-settings toggles driving a real tailscaled (userspace networking, private netns, NeedsLogin).

tailscaled is the reference for the LocalAPI: our bridge's masked edits of CorpDNS, RouteAll,
ShieldsUp and AdvertiseRoutes must be accepted there too, come back on its IPN bus, and show in
its prefs (read with a separate LocalAPI client).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from engine.localapi.schema import MaskedPrefs
from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.tailscaled_proc import tailscaled_in_netns, tailscaled_path

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.path.exists(tailscaled_path()), reason="reference tailscaled not built"),
]

EXIT = ["0.0.0.0/0", "::/0"]


def test_bridge_edits_network_prefs_of_a_real_tailscaled(qloop):
    with tailscaled_in_netns() as sock:

        async def main():
            b = Bridge(EngineClient(sock, timeout=10))
            reader = EngineClient(sock, timeout=10)
            task = asyncio.ensure_future(b.run())
            try:
                await wait_until(
                    lambda: b.state.tray is TrayState.NEEDS_LOGIN and b.state.self_node.name,
                    what="NeedsLogin from tailscaled",
                )
                start = (await reader.get_prefs()).value
                assert (b.state.corp_dns, b.state.route_all, b.state.shields_up) == (
                    start.corp_dns,
                    start.route_all,
                    start.shields_up,
                )
                b.set_corp_dns(not start.corp_dns)
                b.set_route_all(not start.route_all)
                b.set_allow_incoming(False)
                await wait_until(
                    lambda: (
                        (b.state.corp_dns, b.state.route_all, b.state.shields_up)
                        == (not start.corp_dns, not start.route_all, True)
                    ),
                    what="toggles in the view",
                )
                got = (await reader.get_prefs()).value
                assert (got.corp_dns, got.route_all, got.shields_up) == (not start.corp_dns, not start.route_all, True)

                await reader.edit_prefs(MaskedPrefs.of(advertise_routes=["192.168.7.0/24"]))
                await wait_until(lambda: b.state.advertise_routes == ("192.168.7.0/24",), what="route from the bus")
                b.set_advertise_exit_node(True)
                await wait_until(lambda: b.state.advertises_exit_node, what="exit routes advertised")
                got = (await reader.get_prefs()).value
                assert sorted(got.advertise_routes) == sorted(["192.168.7.0/24", *EXIT])
                b.set_advertise_exit_node(False)
                await wait_until(lambda: not b.state.advertises_exit_node, what="exit routes withdrawn")
                assert (await reader.get_prefs()).value.advertise_routes == ["192.168.7.0/24"]
                assert not b.state.read_only and b.state.error == ""
            finally:
                b.stop()
                await asyncio.wait_for(task, 10)

        run(qloop, main(), timeout=120)
