"""Bridge against the fake helper LocalAPI: reconnect, browser SSO flow, actions, 403 read-only, pings."""

from __future__ import annotations

import asyncio

import pytest

from engine.localapi.schema import State
from meshgui.bridge import Bridge
from meshgui.engine_client import EngineClient
from meshgui.state import PathKind, TrayState
from tests.gui.aio import run, running, wait_until
from tests.gui.builders import exit_option, named, peer
from tests.gui.fake_localapi import FakeLocalAPI


@pytest.fixture
def loop(qloop):
    return qloop


def test_helper_down_then_up(loop, sock):
    async def main():
        b = Bridge(EngineClient(sock, timeout=5))
        states = []
        b.stateChanged.connect(lambda v: states.append(v.tray))
        async with running(b):
            await wait_until(
                lambda: (
                    b.notify_count == 0 and TrayState.HELPER_DOWN in states or b.state.tray is TrayState.HELPER_DOWN
                ),
                what="helper down",
            )
            with FakeLocalAPI(sock, backend="Stopped"):
                await wait_until(lambda: b.state.tray is TrayState.STOPPED, what="stopped after reconnect")
            await wait_until(lambda: b.state.tray is TrayState.HELPER_DOWN, what="down after helper exit")

    run(loop, main())


def test_browser_login_flow(loop, sock):
    with FakeLocalAPI(sock) as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            opened = []
            b.browseTo.connect(opened.append)
            async with running(b):
                await wait_until(lambda: b.state.tray is TrayState.NEEDS_LOGIN)
                b.login("https://headscale.example.com")
                await wait_until(lambda: opened, what="BrowseToURL")
                assert opened == [fake.login_url] and b.state.login_pending
                assert fake.prefs["ControlURL"] == "https://headscale.example.com"
                assert ("POST", "/localapi/v0/start") in fake.requests
                assert ("POST", "/localapi/v0/login-interactive") in fake.requests
                fake.push({"BrowseToURL": fake.login_url})  # repeated URL: not opened twice
                fake.complete_login()
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED, what="connected after login")
                assert not b.state.login_pending and opened == [fake.login_url]

        run(loop, main())


def test_actions_exit_node_lan_disconnect(loop, sock):
    peers = [peer(1, named("nas"), exit_option), peer(2, named("phone"))]
    with FakeLocalAPI(sock, backend="Running", peers=peers) as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            async with running(b):
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED and len(b.state.peers) == 2)
                b.set_exit_node("n1CNTRL")
                await wait_until(lambda: b.state.tray is TrayState.EXIT_NODE, what="exit node")
                b.set_allow_lan(True)
                await wait_until(lambda: b.state.allow_lan, what="allow lan")
                b.set_exit_node("")
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED, what="exit cleared")
                assert fake.prefs["ExitNodeIP"] == ""
                b.disconnect_vpn()
                await wait_until(lambda: b.state.tray is TrayState.STOPPED, what="stopped")
                b.ping_peers(b.state.peers)
                await wait_until(lambda: all(p.latency_ms for p in b.state.peers), what="pings")
                assert {p.path for p in b.state.peers} == {PathKind.DIRECT}
                assert b.state.peers[0].path_text == "direct 3 ms"

        run(loop, main())


def test_403_turns_read_only(loop, sock):
    with FakeLocalAPI(sock, backend="Running", read_only=True):

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            failures = []
            b.actionFailed.connect(failures.append)
            async with running(b):
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED)
                assert not b.state.read_only
                b.disconnect_vpn()
                await wait_until(lambda: b.state.read_only, what="read-only")
                assert failures and "not allowed" in failures[0]
                assert b.state.tray is TrayState.CONNECTED

        run(loop, main())


def test_watch_stream_with_huge_and_broken_lines(loop, sock):
    """Framing: a Notify split over many chunks, junk lines and an oversized line do not break the stream."""
    many = [peer(i) for i in range(1000)]
    with FakeLocalAPI(sock, backend="Running", peers=many) as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            async with running(b):
                await wait_until(lambda: len(b.state.peers) == 1000, what="1000 peers")
                fake.call(lambda: [w.write(b"5\r\n{bad\n\r\n") for w in fake._watchers])
                fake.set_backend("Stopped")
                await wait_until(lambda: b.state.backend_state is State.STOPPED, what="state after junk")

        run(loop, main())


def test_odd_fields_from_the_helper_never_make_it_unavailable(loop, sock, caplog):
    """A helper that sends a few fields in the wrong shape: the GUI uses the rest, counts and logs the odd ones."""
    nas, phone = peer(1, named("nas")), peer(2, named("phone"))
    with FakeLocalAPI(sock, backend="Running", peers=[nas, phone]) as fake:

        def make_odd():
            fake.status["Peer"][nas[0]]["Online"] = "yes"
            fake.status["Health"] = "all good"
            fake.prefs["RouteAll"] = 1

        fake.call(make_odd)

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            downs = []
            b.helperDown.connect(downs.append)
            async with running(b):
                await wait_until(
                    lambda: b.state.tray is TrayState.CONNECTED and len(b.state.peers) == 2,
                    what="connected with both peers",
                )
                assert {p.name: p.online for p in b.state.peers} == {"nas": False, "phone": True}
                assert b.state.health == () and b.state.account == "alice@example.com"
                assert b.odd_fields >= 3
                fake.push({"Engine": "busy", "ErrMessage": 5, "State": "six"})
                fake.set_backend("Stopped")
                await wait_until(lambda: b.state.tray is TrayState.STOPPED, what="stopped despite odd notifications")
                assert not b.state.route_all and b.state.error == ""
            assert downs == [], "odd fields are no reason to reconnect"
            assert b.notify_count >= 3

        run(loop, main())
    warned = [r.getMessage() for r in caplog.records if "odd field from the helper" in r.getMessage()]
    assert any("Status.Health: want a list, got str" in m for m in warned)
    assert any("Prefs.RouteAll: want a bool, got int" in m for m in warned)
    assert any("Notify.Engine: want a JSON object, got str" in m for m in warned)
    assert len(warned) == len(set(warned)), "each odd field is warned about once"


class _LosesOneCancel(EngineClient):
    """A client whose status() loses a cancellation once, as Python 3.11's wait_for does when the
    cancel races a read that has just completed (the LocalAPI client no longer uses wait_for)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.lost = 0
        self.calls = 0

    async def status(self):
        s = await super().status()
        self.calls += 1
        if self.lost == 0 and self.calls >= 2:
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                self.lost += 1
        return s


def test_stop_ends_run_even_when_a_call_loses_its_cancellation(loop, sock):
    with FakeLocalAPI(sock, backend="Running") as fake:

        async def main():
            b = Bridge(EngineClient(sock, timeout=5))
            b.client = client = _LosesOneCancel(sock, timeout=5)
            task = asyncio.ensure_future(b.run())
            await wait_until(lambda: b.state.tray is TrayState.CONNECTED)
            fake.push({"State": 6})  # a status refresh is due: the second status() call
            await wait_until(lambda: client.calls >= 2, what="second status call")
            b.stop()
            await asyncio.wait_for(task, 10)
            assert client.lost == 1

        run(loop, main())


def test_stop_at_any_moment_of_a_busy_stream(loop, sock):
    """Stop while notifications and status refreshes are in flight: run() always ends promptly."""
    with FakeLocalAPI(sock, backend="Running") as fake:

        async def main():
            for i in range(25):
                b = Bridge(EngineClient(sock, timeout=5))
                task = asyncio.ensure_future(b.run())
                await wait_until(lambda: b.state.tray is TrayState.CONNECTED)
                for k in range(i % 5 + 1):
                    fake.push({"State": 6, "Engine": {"RBytes": k}})
                await asyncio.sleep((i % 7) * 0.03)
                b.stop()
                await asyncio.wait_for(task, 10)

        run(loop, main(), timeout=120)
