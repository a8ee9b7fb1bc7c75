"""IPN backend driving the FakeEngine: login flows, up/down, exit nodes, logout, keys, status, the bus."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from engine.ipn.backend import BackendError, PrefsError
from engine.ipn.local import Backend
from engine.ipn.store import FileStore, MemoryStore, Stored, StoreError
from engine.localapi.schema import MaskedPrefs, Notify, NotifyWatchOpt, Prefs, SetKeysRequest, State
from engine.types.keys import MachinePrivate, NodePrivate
from tests.support.fake_engine import FakeEngine


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Harness:
    def __init__(self, **kw):
        self.engine = FakeEngine(**kw)
        self.backend = Backend(self.engine, store=MemoryStore(), os_hostname=lambda: "testhost")
        self.seen: list[Notify] = []
        self._task = None

    async def __aenter__(self):
        await self.backend.start()
        gen = self.backend.watch(NotifyWatchOpt.INITIAL_STATE)
        await gen.__anext__()

        async def collect():
            async for n in gen:
                self.seen.append(n)

        self._task = asyncio.get_running_loop().create_task(collect())
        return self

    async def __aexit__(self, *exc):
        await self.backend.aclose()
        await asyncio.wait_for(self._task, 5)

    def states(self):
        return [n.state for n in self.seen if n.state is not None]

    async def settle(self):
        for _ in range(5):
            await asyncio.sleep(0)


UP = Prefs(control_url="http://control.invalid", want_running=True)


def test_fresh_backend_needs_login_and_engine_is_not_started():
    async def t():
        async with Harness() as h:
            assert h.backend.state == State.NEEDS_LOGIN
            assert h.engine.calls == []
            st = h.backend.status()
            assert st.backend_state == "NeedsLogin" and st.self is not None and st.self.host_name == "testhost"
            assert st.peer is None and not st.have_node_key

    run(t())


def test_start_with_auto_login_reaches_running_and_reports_peers():
    async def t():
        async with Harness() as h:
            await h.backend.start_with(update_prefs=UP)
            await h.settle()
            assert h.backend.state == State.RUNNING
            assert h.states() == [State.STARTING, State.RUNNING]
            assert any(n.login_finished == {} for n in h.seen)
            assert any(n.net_map is not None for n in h.seen)
            st = h.backend.status()
            assert st.have_node_key and st.tailscale_ips == ["100.64.0.1", "fd7a:115c:a1e0::1"]
            assert set(st.peer) == {"nodekey:" + f"{i:02x}" * 32 for i in (2, 3, 4)}
            names = {p.host_name: p for p in st.peer.values()}
            assert names["peer1"].cur_addr == "192.0.2.2:41641" and names["peer1"].active
            assert names["exit1"].exit_node_option and not names["exit1"].exit_node
            assert not names["offline1"].online and names["offline1"].last_seen.startswith("2026-11-20")
            assert st.user["1001"].login_name == "alice@example.com"
            assert st.current_tailnet is not None and st.magic_dns_suffix == "tail.example.com"
            assert h.backend.prefs.config.user_profile.login_name == "alice@example.com"

    run(t())


def test_interactive_login_sends_browse_to_url_then_runs():
    async def t():
        async with Harness(auto_login=False) as h:
            await h.backend.start_with(update_prefs=UP)
            assert h.backend.state == State.NEEDS_LOGIN
            await h.backend.login_interactive()
            await h.settle()
            urls = [n.browse_to_url for n in h.seen if n.browse_to_url]
            assert urls == ["https://fake-control.invalid/a/0001"]
            assert h.backend.status().auth_url == urls[0]
            await h.engine.complete_login()
            await h.settle()
            assert h.backend.state == State.RUNNING
            assert h.backend.status().auth_url == ""

    run(t())


def test_down_and_up_toggle_want_running_and_the_engine():
    async def t():
        async with Harness() as h:
            await h.backend.start_with(update_prefs=UP)
            p = await h.backend.edit_prefs(MaskedPrefs.of(want_running=False))
            assert not p.want_running and h.backend.state == State.STOPPED
            assert h.engine.calls[-1] == "stop" and not h.engine.running
            st = h.backend.status()
            assert st.backend_state == "Stopped" and "Tailscale is stopped." in st.health
            await h.backend.edit_prefs(MaskedPrefs.of(want_running=True))
            await h.settle()
            assert h.backend.state == State.RUNNING and h.engine.running
            assert h.states()[-3:] == [State.STOPPED, State.STARTING, State.RUNNING]

    run(t())


def test_exit_node_validation_and_ip_to_id_resolution():
    async def t():
        async with Harness() as h:
            await h.backend.start_with(update_prefs=UP)
            with pytest.raises(PrefsError, match="peer1 .* is not advertising an exit node"):
                await h.backend.edit_prefs(MaskedPrefs.of(exit_node_ip="100.64.0.2"))
            with pytest.raises(PrefsError, match="no node found in netmap with IP 100.64.0.99"):
                await h.backend.edit_prefs(MaskedPrefs.of(exit_node_ip="100.64.0.99"))
            with pytest.raises(PrefsError, match="own Tailscale IP"):
                await h.backend.edit_prefs(MaskedPrefs.of(exit_node_ip="100.64.0.1"))
            with pytest.raises(PrefsError, match="invalid exit node IP"):
                await h.backend.edit_prefs(MaskedPrefs.of(exit_node_ip="banana"))
            p = await h.backend.edit_prefs(MaskedPrefs.of(exit_node_ip="100.64.0.3"))
            assert p.exit_node_id == "n3CNTRL" and p.exit_node_ip == ""
            assert "reconfigure" in h.engine.calls and h.engine.cfg.exit_node_id == "n3CNTRL"
            st = h.backend.status()
            ex = [ps for ps in st.peer.values() if ps.exit_node]
            assert [e.host_name for e in ex] == ["exit1"]
            assert st.exit_node_status is not None and st.exit_node_status.id == "n3CNTRL"
            p = await h.backend.set_use_exit_node(False)
            assert p.exit_node_id == "" and p.internal_exit_node_prior == "n3CNTRL"
            p = await h.backend.set_use_exit_node(True)
            assert p.exit_node_id == "n3CNTRL"

    run(t())


@pytest.mark.parametrize(
    "edit,msg",
    [
        (dict(run_ssh=True), "SSH server is not supported"),
        (dict(hostname="bad_name!"), "invalid hostname"),
        (dict(advertise_routes=["10.0.0.1/8"]), "invalid route to advertise"),
        (dict(control_url="ftp://x"), "invalid control URL"),
    ],
)
def test_invalid_prefs_are_refused_and_leave_prefs_unchanged(edit, msg):
    async def t():
        async with Harness() as h:
            before = h.backend.prefs
            with pytest.raises(PrefsError, match=msg):
                await h.backend.edit_prefs(MaskedPrefs.of(**edit))
            assert h.backend.prefs == before

    run(t())


def test_internal_and_operator_prefs_are_guarded():
    async def t():
        async with Harness() as h:
            with pytest.raises(PrefsError, match="internal"):
                await h.backend.edit_prefs(MaskedPrefs.of(internal_exit_node_prior="x"))
            with pytest.raises(PrefsError, match="only root"):
                await h.backend.edit_prefs(MaskedPrefs.of(operator_user="mallory"), actor_is_root=False)
            p = await h.backend.edit_prefs(MaskedPrefs.of(operator_user="alice"), actor_is_root=True)
            assert p.operator_user == "alice"

    run(t())


def test_logout_returns_to_needs_login_and_forgets_login():
    async def t():
        async with Harness() as h:
            await h.backend.start_with(update_prefs=UP)
            await h.backend.logout()
            assert h.backend.state == State.NEEDS_LOGIN
            assert "logout" in h.engine.calls and not h.engine.running
            p = h.backend.prefs
            assert p.logged_out and not p.want_running and p.config is None
            assert h.backend.status().peer is None

    run(t())


def test_engine_failure_stops_with_an_error_message():
    async def t():
        async with Harness(fail_start="TUN: permission denied") as h:
            await h.backend.start_with(update_prefs=UP)
            await h.settle()
            errs = [n.err_message for n in h.seen if n.err_message]
            assert errs == ["TUN: permission denied"]

    run(t())


def test_keys_from_gui_are_validated_and_never_echoed():
    async def t():
        async with Harness() as h:
            with pytest.raises(PrefsError, match="invalid keys"):
                h.backend.set_keys(SetKeysRequest(machine_private="privkey:00", node_private="x"))
            mk, nk = MachinePrivate.generate(), NodePrivate.generate()
            info = h.backend.set_keys(SetKeysRequest(machine_private=mk.to_text(), node_private=nk.to_text()))
            assert info.node_public == str(nk.public()) and info.source == "gui"
            assert nk.to_text() not in info.to_json() and mk.to_text() not in info.to_json()
            await h.backend.start_with(update_prefs=UP)
            assert h.backend.status().self.public_key == str(nk.public())
            with pytest.raises(BackendError, match="while connected"):
                h.backend.set_keys(
                    SetKeysRequest(
                        machine_private=MachinePrivate.generate().to_text(),
                        node_private=NodePrivate.generate().to_text(),
                    )
                )

    run(t())


def test_slow_watcher_is_cut_off_not_buffered_forever():
    async def t():
        b = Backend(FakeEngine(), store=MemoryStore())
        await b.start()
        gen = b.watch(NotifyWatchOpt(0))
        task = asyncio.get_running_loop().create_task(gen.__anext__())
        await asyncio.sleep(0)
        first = await asyncio.wait_for(asyncio.shield(task), 0.01) if task.done() else None
        assert first is None
        for i in range(400):
            b._send(Notify(err_message=str(i)))
        got = [await task]
        async for n in gen:
            got.append(n)
        assert 1 <= len(got) <= 256
        await b.aclose()

    run(t())


def test_restart_keeps_login_in_the_store():
    async def t():
        store = MemoryStore()
        b = Backend(FakeEngine(), store=store)
        await b.start()
        await b.start_with(update_prefs=UP)
        assert b.state == State.RUNNING
        await b.aclose()
        eng2 = FakeEngine()
        b2 = Backend(eng2, store=store)
        await b2.start()
        assert b2.state in (State.STARTING, State.RUNNING) and eng2.calls == ["start"]
        await b2.aclose()

    run(t())


def test_gui_mode_saved_login_waits_for_the_guis_keys():
    """--prefs (GUI mode): after a restart the saved login connects under the GUI's keys, never generated ones."""

    async def t():
        store = MemoryStore()
        b = Backend(FakeEngine(), store=store, generate_keys=False)
        await b.start()
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()
        b.set_keys(SetKeysRequest(machine_private=mk.to_text(), node_private=nk.to_text()))
        await b.start_with(update_prefs=UP)
        assert b.state == State.RUNNING
        await b.aclose()
        eng2 = FakeEngine()
        b2 = Backend(eng2, store=MemoryStore(Stored(store.load().prefs, None)), generate_keys=False)  # as --prefs
        await b2.start()
        assert eng2.calls == [] and b2.keys is None  # no keys yet: nothing started under made-up ones
        b2.set_keys(SetKeysRequest(machine_private=mk.to_text(), node_private=nk.to_text()))
        for _ in range(50):
            if eng2.calls:
                break
            await asyncio.sleep(0.01)
        assert eng2.calls == ["start"]
        assert b2.status().self.public_key == str(nk.public())
        await b2.aclose()

    run(t())


def test_file_store_is_private_and_atomic(tmp_path):
    path = tmp_path / "state.json"
    fs = FileStore(path, keep_keys=True)
    assert fs.load() == Stored()
    from engine.ipn.engine_api import NodeKeys

    keys = NodeKeys(MachinePrivate.generate(), NodePrivate.generate(), source="state-file")
    fs.save(Prefs(hostname="h"), keys)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = fs.load()
    assert back.prefs.hostname == "h" and back.keys.node == keys.node
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match="accessible by other users"):
        fs.load()
    os.chmod(path, 0o600)
    path.write_text("{broken")
    with pytest.raises(StoreError, match="corrupt"):
        fs.load()
    prefs_only = FileStore(tmp_path / "p.json", keep_keys=False)
    prefs_only.save(Prefs(), keys)
    assert "privkey" not in (tmp_path / "p.json").read_text()


def test_engine_updates_are_pushed_to_watchers_that_ask(monkeypatch):
    import engine.ipn.local as bmod

    monkeypatch.setattr(bmod, "ENGINE_UPDATE_INTERVAL", 0.01)

    async def t():
        b = Backend(FakeEngine(), store=MemoryStore())
        await b.start()
        await b.start_with(update_prefs=UP)
        gen = b.watch(NotifyWatchOpt.ENGINE_UPDATES)
        n = await asyncio.wait_for(gen.__anext__(), 5)
        assert n.engine is not None and n.engine.r_bytes == 1234 and n.engine.w_bytes == 5678
        assert n.engine.num_live == 1
        await gen.aclose()
        await b.aclose()

    run(t())


def test_new_control_server_forgets_the_login_and_restarts_the_engine():
    async def t():
        async with Harness(auto_login=False) as h:
            await h.backend.start_with(update_prefs=UP)
            await h.engine.complete_login()
            assert h.backend.state == State.RUNNING
            other = Prefs(control_url="https://other.invalid", want_running=True)
            await h.backend.start_with(update_prefs=other)
            assert h.backend.state == State.NEEDS_LOGIN
            assert h.backend.prefs.config is None and h.backend.prefs.logged_out
            assert h.engine.calls[-2:] == ["stop", "start"] and h.engine.cfg.control_url == "https://other.invalid"

    run(t())


def test_rate_limited_watchers_get_coalesced_netmaps(monkeypatch):
    import engine.ipn.local as bmod

    monkeypatch.setattr(bmod, "ENGINE_UPDATE_INTERVAL", 0.05)

    async def t():
        b = Backend(FakeEngine(), store=MemoryStore())
        await b.start()
        await b.start_with(update_prefs=UP)
        fast, slow = b.watch(NotifyWatchOpt(0)), b.watch(NotifyWatchOpt.RATE_LIMIT)
        tf = asyncio.get_running_loop().create_task(fast.__anext__())
        ts_ = asyncio.get_running_loop().create_task(slow.__anext__())
        await asyncio.sleep(0)
        for i in range(20):
            await b.edit_prefs(MaskedPrefs.of(hostname=f"h{i}"))  # FakeEngine.reconfigure -> a new netmap each
        first_fast = await asyncio.wait_for(tf, 5)
        got_fast = [first_fast]
        while not fast.ag_running and len(got_fast) < 40:
            try:
                got_fast.append(await asyncio.wait_for(fast.__anext__(), 0.01))
            except asyncio.TimeoutError:
                break
        first_slow = await asyncio.wait_for(ts_, 5)
        slow_netmaps = [first_slow] if first_slow.net_map else []
        while True:
            try:
                n = await asyncio.wait_for(slow.__anext__(), 0.3)
            except asyncio.TimeoutError:
                break
            if n.net_map:
                slow_netmaps.append(n)
        assert sum(1 for n in got_fast if n.net_map) == 20
        assert 1 <= len(slow_netmaps) <= 3
        assert slow_netmaps[-1].net_map["SelfNode"]["Hostinfo"]["Hostname"] == "h19"
        await fast.aclose()
        await slow.aclose()
        await b.aclose()

    run(t())
