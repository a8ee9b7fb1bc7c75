"""Network-settings toggles against our real helper process (`mesh-helper serve`, fake engine): prefs round-trip.

The GUI's bridge edits CorpDNS / RouteAll / ShieldsUp / AdvertiseRoutes; an independent reader
(a plain LocalAPI GET /prefs, and `meshctl --json status`) shows the helper took them, and the
menu built from the bridge's state shows what the helper reports (the fake control never approves
our exit routes: "waiting for the admin").
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from meshgui import menu
from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.keys import PrivateKey
from meshgui.state import Approval, TrayState
from tests.gui.aio import run, wait_until
from tests.gui.helper_proc import ROOT, our_helper
from tests.natmatrix.localapi import get_json

EXIT = ["0.0.0.0/0", "::/0"]


@pytest.fixture
def helper_sock():
    with our_helper() as sock:
        yield sock


def helper_prefs(sock: str) -> dict:
    return get_json(sock, "/localapi/v0/prefs")


def meshctl_status(sock: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", "engine.cli.meshctl", "--socket", sock, "--json", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr[-1000:]
    return json.loads(p.stdout)


def test_toggles_round_trip_into_the_helper(qloop, helper_sock):
    async def main():
        client = EngineClient(helper_sock, timeout=10)
        machine, node = PrivateKey.generate(), PrivateKey.generate()

        async def hand_keys():
            await client.set_keys({"MachineKey": machine.to_text(), "NodeKey": node.to_text()})

        b = Bridge(client, on_connected=hand_keys)
        task = asyncio.ensure_future(b.run())
        try:
            await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN, what="NeedsLogin")
            b.login()
            await wait_until(lambda: b.state.tray is TrayState.CONNECTED, what="Running")
            before = helper_prefs(helper_sock)
            assert (before["CorpDNS"], before["RouteAll"], before["ShieldsUp"]) == (True, False, False)
            assert (b.state.corp_dns, b.state.route_all, b.state.allow_incoming) == (True, False, True)

            b.set_corp_dns(False)
            b.set_route_all(True)
            b.set_allow_incoming(False)
            await wait_until(
                lambda: (b.state.corp_dns, b.state.route_all, b.state.shields_up) == (False, True, True),
                what="three toggles in the view",
            )
            got = await asyncio.to_thread(helper_prefs, helper_sock)
            assert (got["CorpDNS"], got["RouteAll"], got["ShieldsUp"]) == (False, True, True)

            b.set_advertise_exit_node(True)
            await wait_until(lambda: b.state.advertises_exit_node, what="exit routes advertised")
            assert sorted((await asyncio.to_thread(helper_prefs, helper_sock))["AdvertiseRoutes"]) == sorted(EXIT)
            me = (await asyncio.to_thread(meshctl_status, helper_sock))["Self"]
            assert not set(EXIT) & set(me.get("AllowedIPs") or []), "the fake control approves nothing"
            await wait_until(lambda: b.state.exit_node_approval is Approval.PENDING, what="approval state")
            kids = next(i for i in menu.build(b.state, now=b._clock()) if i.text == "Network settings").children
            assert kids[-1].text == "Needs the tailnet admin's approval"

            # Stopped is still "logged in": the settings stay editable there.
            b.disconnect_vpn()
            await wait_until(lambda: b.state.tray is TrayState.STOPPED, what="stopped")
            b.set_advertise_exit_node(False)
            b.set_corp_dns(True)
            b.set_allow_incoming(True)
            await wait_until(
                lambda: not b.state.advertises_exit_node and b.state.corp_dns and not b.state.shields_up,
                what="settings back while stopped",
            )
            got = await asyncio.to_thread(helper_prefs, helper_sock)
            assert (got["CorpDNS"], got["RouteAll"], got["ShieldsUp"]) == (True, True, False)
            assert not got.get("AdvertiseRoutes")
            assert menu.build(b.state, now=b._clock())[2].text == "Connect"
        finally:
            b.stop()
            await asyncio.wait_for(task, 10)

    run(qloop, main(), timeout=120)
