"""The GUI's client and bridge against a real tailscaled LocalAPI (userspace networking, private netns, NeedsLogin)."""

from __future__ import annotations

import asyncio
import os

import pytest

from engine.localapi.schema import MaskedPrefs, State
from meshgui import menu
from meshgui.bridge import Bridge
from meshgui.engine_client import GUI_WATCH_MASK, EngineClient
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.nobody import status_then_write_as_nobody
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
        assert st.problems == (), "tailscaled's status reads without odd fields"
        assert st.value.state is State.NEEDS_LOGIN and st.value.self.host_name
        prefs = await c.get_prefs()
        assert prefs.problems == () and prefs.value.want_running is False
        first = None
        async for n in c.watch(GUI_WATCH_MASK):
            first = n
            break
        assert first.problems == ()
        assert first.value.state is State.NEEDS_LOGIN
        assert first.value.prefs.logged_out is True
        # A masked PATCH round-trips and shows up on the bus.
        seen = asyncio.get_running_loop().create_future()

        async def watch():
            async for n in c.watch(0):
                if n.value.prefs is not None and n.value.prefs.exit_node_allow_lan_access:
                    seen.set_result(n)
                    return

        w = asyncio.ensure_future(watch())
        await asyncio.sleep(0.3)
        try:
            got = await c.edit_prefs(MaskedPrefs.of(exit_node_allow_lan_access=True))
            assert got.value.exit_node_allow_lan_access is True
            await asyncio.wait_for(seen, 20)
        finally:
            w.cancel()
            await c.edit_prefs(MaskedPrefs.of(exit_node_allow_lan_access=False))

    run(qloop, main())


def test_bridge_shows_needs_login_with_real_tailscaled(qloop, ts_sock):
    async def main():
        b = Bridge(EngineClient(ts_sock, timeout=10))
        task = asyncio.ensure_future(b.run())
        try:
            await wait_until(
                lambda: b.state.tray is TrayState.NEEDS_LOGIN and b.state.self_node.name,
                what="NeedsLogin from tailscaled",
            )
            items = menu.build(b.state, now=b._clock())
            assert [i.text for i in items][:3] == ["Logged out", "", "Log in…"]
            assert b.state.version.startswith("1.")
        finally:
            b.stop()
            await asyncio.wait_for(task, 10)

    run(qloop, main())


@pytest.mark.xfail(
    strict=False,
    reason="rare race (about 1 in 20): tailscaled answers 403 and closes before reading "
    "the request body; the client now tolerates the failed write, but the answer can still be lost "
    "when the close arrives first. Passes reliably with our helper (tests/gui/test_our_helper.py).",
)
def test_non_operator_gets_403_and_read_only(ts_sock):
    """tailscaled answers a write by an unprivileged non-operator uid with 403: our client maps it to AccessDenied."""
    got = status_then_write_as_nobody(ts_sock)
    assert got == {"state": "NeedsLogin", "denied": True, "status": 403}
