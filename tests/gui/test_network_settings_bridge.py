"""Network-settings actions through the Bridge: exact masked prefs PATCHed to a fake LocalAPI, and the view after."""

from __future__ import annotations

import asyncio
import json

from engine.localapi.schema import Decoded, MaskedPrefs, Prefs
from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.state import TrayState
from tests.gui.aio import run, running, wait_until
from tests.gui.builders import exit_option, named, peer
from tests.gui.fake_localapi import FakeLocalAPI

EXIT = ["0.0.0.0/0", "::/0"]


class RecordingLocalAPI(FakeLocalAPI):
    """FakeLocalAPI that keeps every PATCH /prefs body (the MaskedPrefs JSON as sent)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.patches: list[dict] = []

    def _route(self, method, path, q, body):
        if method == "PATCH" and path == "/localapi/v0/prefs":
            self.patches.append(json.loads(body))
        return super()._route(method, path, q, body)


def mask(body: dict) -> dict:
    """The fields a MaskedPrefs body changes, with their values: {"CorpDNS": False} for CorpDNSSet."""
    return {k[:-3]: body[k[:-3]] for k, v in body.items() if k.endswith("Set") and v is True}


def test_toggles_send_exactly_one_masked_field(qloop, sock):
    with RecordingLocalAPI(sock, backend="Running", peers=[peer(1, named("nas"), exit_option)]) as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            async with running(b):
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED, what="connected")
                b.set_corp_dns(False)
                await wait_until(lambda: not b.state.corp_dns, what="CorpDNS off")
                b.set_route_all(True)
                await wait_until(lambda: b.state.route_all, what="RouteAll on")
                b.set_allow_incoming(False)
                await wait_until(lambda: b.state.shields_up and not b.state.allow_incoming, what="shields up")
                b.set_allow_incoming(True)
                await wait_until(lambda: not b.state.shields_up, what="shields down")
            assert [mask(p) for p in fake.patches] == [
                {"CorpDNS": False},
                {"RouteAll": True},
                {"ShieldsUp": True},
                {"ShieldsUp": False},
            ]
            assert fake.patches[0]["CorpDNSSet"] is True and "RouteAllSet" not in fake.patches[0]
            assert (fake.prefs["CorpDNS"], fake.prefs["RouteAll"], fake.prefs["ShieldsUp"]) == (False, True, False)

        run(qloop, main())


def test_run_as_exit_node_keeps_other_advertised_routes(qloop, sock):
    with RecordingLocalAPI(sock, backend="Running") as fake:
        fake.call(lambda: fake.prefs.update(AdvertiseRoutes=["192.168.1.0/24"]))

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            async with running(b):
                await wait_until(lambda: b.state.advertise_routes == ("192.168.1.0/24",), what="subnet route")
                assert not b.state.advertises_exit_node
                b.set_advertise_exit_node(True)
                await wait_until(lambda: b.state.advertises_exit_node, what="exit routes advertised")
                # Another client adds a route meanwhile: turning off re-reads the helper's prefs first.
                fake.call(lambda: fake.prefs.update(AdvertiseRoutes=["192.168.1.0/24", *EXIT, "10.9.0.0/16"]))
                b.set_advertise_exit_node(False)
                await wait_until(lambda: not b.state.advertises_exit_node, what="exit routes withdrawn")
                b.set_advertise_exit_node(False)  # already off: nothing to send
                await asyncio.sleep(0.3)
            assert [mask(p) for p in fake.patches] == [
                {"AdvertiseRoutes": ["192.168.1.0/24", *EXIT]},
                {"AdvertiseRoutes": ["192.168.1.0/24", "10.9.0.0/16"]},
            ]
            assert fake.prefs["AdvertiseRoutes"] == ["192.168.1.0/24", "10.9.0.0/16"]

        run(qloop, main())


def test_read_only_toggle_is_refused_and_turns_read_only(qloop, sock):
    with RecordingLocalAPI(sock, backend="Running", read_only=True) as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            failures = []
            b.actionFailed.connect(failures.append)
            async with running(b):
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED, what="connected")
                b.set_route_all(True)
                await wait_until(lambda: b.state.read_only, what="read-only")
            assert failures and "not allowed" in failures[0]
            assert fake.prefs["RouteAll"] is False and not b.state.route_all

        run(qloop, main())


def test_app_routes_window_checkboxes_and_actions_to_the_helper(qapp, qloop, tmp_path, monkeypatch):
    """App.on_action wiring: the window's checkboxes (and the tray's action names) reach the helper's prefs."""
    from meshgui.app import App, parse_args

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    sock = str(tmp_path / "helper.sock")
    with RecordingLocalAPI(sock, backend="Running") as fake:
        app = App(qapp, parse_args(["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise"]))

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(lambda: app.view.tray is TrayState.CONNECTED, what="connected")
                boxes = app.window.net_boxes
                assert all(b.isVisibleTo(app.window) for b in boxes.values())
                boxes["set_route_all"].click()
                await wait_until(lambda: app.view.route_all and boxes["set_route_all"].isChecked(), what="RouteAll")
                boxes["set_advertise_exit_node"].click()
                await wait_until(lambda: app.view.advertises_exit_node, what="exit routes")
                assert app.window.exit_approval.text() == "(the admin must approve it)"  # fake status: no AllowedIPs
                app.on_action("set_corp_dns", False)
                app.on_action("set_allow_incoming", False)
                await wait_until(lambda: not app.view.corp_dns and app.view.shields_up, what="DNS off, shields up")
            finally:
                app.quit()
                await asyncio.wait_for(task, 20)
                app.window.close()

        run(qloop, main())
        assert [mask(p) for p in fake.patches] == [
            {"RouteAll": True},
            {"AdvertiseRoutes": EXIT},
            {"CorpDNS": False},
            {"ShieldsUp": True},
        ]


def test_quick_toggles_end_on_the_helpers_last_answer(qloop):
    """Three toggles in a row: the edits go out one at a time, so a slow first answer cannot land last."""

    class SlowFirstAnswer:
        def __init__(self):
            self.prefs = Prefs()  # CorpDNS on, RouteAll and ShieldsUp off
            self.calls = 0

        async def edit_prefs(self, masked: MaskedPrefs) -> Decoded[Prefs]:
            self.calls += 1
            delay = 0.3 if self.calls == 1 else 0.0
            self.prefs = snapshot = masked.apply_to(self.prefs)
            await asyncio.sleep(delay)
            return Decoded(snapshot)

    async def main():
        client = SlowFirstAnswer()
        b = Bridge(client)
        b.set_corp_dns(False)
        b.set_route_all(True)
        b.set_allow_incoming(False)
        await wait_until(lambda: client.calls == 3, what="three edits")
        await asyncio.sleep(0.5)
        assert (b.state.corp_dns, b.state.route_all, b.state.shields_up) == (False, True, True)

    run(qloop, main(), timeout=30)
