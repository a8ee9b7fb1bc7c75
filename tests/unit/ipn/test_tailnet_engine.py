"""TailnetEngine on a fake System: prefs reach the UserspaceEngine, control events become engine_api events."""

from __future__ import annotations

import logging

import pytest

from engine.control.client import (
    AuthURL as CAuthURL,
    NetMapUpdated,
    NodeKeyRotated as CNodeKeyRotated,
    State,
    Status,
    StatusChanged,
)
from engine.ipn.engine_api import (
    AuthURL,
    DNSUnavailable,
    EngineConfig,
    EngineFailed,
    EngineUp,
    LoggedIn,
    LoginNeeded,
    NetMapUpdate,
    NodeEngine,
    NodeKeyRotated,
    NodeKeys,
)
from engine.ipn.tailnet_engine import TailnetEngine
from engine.router.exitnode import ExitRouteConfig
from engine.types.keys import MachinePrivate, NodePrivate
from engine.wgengine.options import EngineOptions
from tests.unit.ipn.harness import URL, run, running, until
from tests.unit.wgengine.fakes import EXIT_ALLOWED, FakeWorld, peer, session_netmap

FULL = EngineConfig(
    control_url=URL,
    exit_node_id="nXYZCNTRL",
    exit_node_ip="100.64.0.3",
    exit_node_allow_lan_access=True,
    corp_dns=False,
    route_all=True,
    advertise_routes=("10.1.0.0/16",),
    shields_up=True,
)
OLD_DOC_KEYS = [
    "State",
    "InMapPoll",
    "LastError",
    "AuthURL",
    "NodeKey",
    "ListenPort",
    "Reconfigs",
    "PeerUpserts",
    "PeerRemoves",
    "StreamsStarted",
    "Prefs",
    "ExitNodeID",
    "MagicDNS",
    "Filter",
    "Self",
    "Peers",
]


def test_is_a_node_engine():
    assert isinstance(TailnetEngine(EngineOptions(), FakeWorld().system()), NodeEngine)


def test_reconfigure_passes_every_pref_to_the_engine():
    async def t():
        eng, w, events, _ = await running()
        await eng.reconfigure(FULL)
        prefs = eng.debug_status()["Prefs"]
        assert prefs == {
            "ExitNode": "nXYZCNTRL",
            "ExitNodeAllowLANAccess": True,
            "AdvertiseExitNode": False,
            "AdvertiseRoutes": ["10.1.0.0/16"],
            "AcceptDNS": False,
            "AcceptRoutes": True,
            "ShieldsUp": True,
        }
        hi = eng._s.client.opts.hostinfo
        assert hi.routable_ips == ("10.1.0.0/16",) and hi.hostname == "testhost" and hi.net_info.preferred_derp == 999
        await eng.reconfigure(EngineConfig(control_url=URL, hostname="box"))  # `--exit-node=` etc.
        assert eng.debug_status()["Prefs"] == {
            "ExitNode": None,
            "ExitNodeAllowLANAccess": False,
            "AdvertiseExitNode": False,
            "AdvertiseRoutes": [],
            "AcceptDNS": True,
            "AcceptRoutes": False,
            "ShieldsUp": False,
        }
        assert eng._s.client.opts.hostinfo.hostname == "box" and eng._s.client.opts.hostinfo.routable_ips is None
        await eng.reconfigure(EngineConfig(control_url=URL, advertise_routes=("0.0.0.0/0", "::/0", "10.2.0.0/24")))
        assert eng.debug_status()["Prefs"]["AdvertiseExitNode"] is True
        assert eng._s.client.opts.hostinfo.routable_ips == ("10.2.0.0/24", "0.0.0.0/0", "::/0")
        assert not [e for e in events if isinstance(e, EngineFailed)]
        await eng.aclose()

    run(t())


def test_exit_node_and_advertising_one_exclude_each_other():
    async def t():
        eng, w, events, _ = await running(EngineConfig(control_url=URL, exit_node_id="n3CNTRL"))
        await eng.reconfigure(
            EngineConfig(control_url=URL, exit_node_id="n3CNTRL", advertise_routes=("0.0.0.0/0", "::/0"))
        )
        [failed] = [e for e in events if isinstance(e, EngineFailed)]
        assert "cannot apply prefs" in failed.message and "at the same time" in failed.message
        assert eng.debug_status()["Prefs"]["AdvertiseExitNode"] is False  # the old prefs stay
        await eng.aclose()

    run(t())


def test_control_events_become_engine_events_and_reach_the_data_plane():
    async def t():
        eng, w, events, _ = await running(EngineConfig(control_url=URL, exit_node_ip="100.64.0.3"))
        s = eng._s
        eng._on_control_event(s, CAuthURL("http://ctl/auth/1"))
        _, nm = session_netmap(peer(2), peer(3, allowed_ips=EXIT_ALLOWED))
        eng._on_control_event(s, NetMapUpdated(nm))
        eng._on_control_event(s, StatusChanged(Status(state=State.AUTHENTICATED, login_name="alice@x")))
        kinds = [type(e) for e in events]
        assert kinds[:4] == [AuthURL, NetMapUpdate, EngineUp, LoggedIn]
        assert events[3].user.id == 7 and events[3].user.login_name == "alice@x"
        view = events[1].netmap
        assert [p.node_id for p in view.peers] == [2, 3] and view.peers[1].exit_node_option
        assert eng.registered_url == URL
        assert w.log.of("exit", "set") == [(ExitRouteConfig("mesh9"),)]
        assert eng._s.client.opts.hostinfo.exit_node_id == "n3CNTRL"  # Hostinfo.ExitNodeID: the node in use
        svc = eng._s.client.opts.hostinfo.services
        assert svc, "peerAPI ports announced once it listens on our addresses"
        doc = eng.debug_status()
        assert list(doc) == OLD_DOC_KEYS and doc["ExitNodeID"] == 3 and doc["State"] == "logging-in"
        assert doc["NodeKey"] == str(s.keys.node.public()) and doc["PeerUpserts"] == 2
        snap = eng.status()
        assert snap.tun and snap.netmap.self_node.node_id == 1
        eng._on_control_event(s, NetMapUpdated(nm))
        assert [type(e) for e in events].count(EngineUp) == 1
        # needs login: peers and exit routing go, the TUN stays
        w.log.clear()
        eng._on_control_event(s, StatusChanged(Status(state=State.NEEDS_LOGIN, last_error="key expired")))
        assert isinstance(events[-1], LoginNeeded) and events[-1].reason == "key expired"
        assert w.log.of("exit", "set") == [(None,)] and len(w.log.of("device", "remove_peer")) == 2
        assert eng.status().netmap is None and eng.debug_status()["Peers"] == []
        await eng.aclose()

    run(t())


def test_key_rotation_moves_the_data_plane_and_reaches_the_backend(caplog):
    caplog.set_level(logging.DEBUG)

    async def t():
        eng, w, events, keys = await running()
        new = NodePrivate.generate()
        eng._on_control_event(eng._s, CNodeKeyRotated(keys.node.public(), new))
        assert w.log.of("device", "set_private_key")[-1] == (new.raw,)
        [ev] = [e for e in events if isinstance(e, NodeKeyRotated)]
        assert ev.new_private == new and ev.old_public == keys.node.public()
        await eng.aclose()
        return new

    new = run(t())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert new.public().short() in logged and new.to_text()[8:] not in logged


def test_stop_restores_the_system_and_the_engine_reports_nothing():
    async def t():
        eng, w, events, _ = await running()
        _, nm = session_netmap()
        eng._on_control_event(eng._s, NetMapUpdated(nm))
        w.log.clear()
        await eng.stop()
        closed = [(c[0], c[1]) for c in w.log.calls]
        for step in [
            ("exit", "set"),
            ("fwd", "set"),
            ("fwd", "close"),
            ("router", "close"),
            ("device", "close"),
            ("tun", "close"),
            ("dns", "close"),
            ("peerapi", "close"),
        ]:
            assert step in closed
        assert eng.debug_status() == {} and eng.status().netmap is None
        with pytest.raises(DNSUnavailable, match="not running"):
            eng.dns_os_config()
        with pytest.raises(NotImplementedError):
            await eng.netcheck()
        assert (await eng.ping("100.64.0.2", "disco", 0)).err == "no matching peer"
        await eng.stop()  # idempotent
        await eng.aclose()

    run(t())


def test_a_failing_engine_start_is_reported_and_restored():
    async def t():
        w = FakeWorld()
        w.log.fail[("router", "up")] = OSError("RTNETLINK answers: Operation not permitted")
        eng = TailnetEngine(EngineOptions(tun_name="mesh9"), w.system())
        events: list = []
        await eng.start(
            EngineConfig(control_url=URL), NodeKeys(MachinePrivate.generate(), NodePrivate.generate()), events.append
        )
        await until(lambda: events, "EngineFailed")
        assert isinstance(events[0], EngineFailed) and "Operation not permitted" in events[0].message
        assert ("device", "close") in [(c[0], c[1]) for c in w.log.calls]
        await eng.aclose()

    run(t())


def test_malformed_netmap_still_reaches_the_backend():
    async def t():
        eng, w, events, _ = await running()
        from engine.types.keys import NodePublic

        _, nm = session_netmap(
            peer(2, allowed_ips=("junk",)), peer(5, key=NodePublic.zero()), peer(6, addresses=("100.64.0.6/99",))
        )
        eng._on_control_event(eng._s, NetMapUpdated(nm))
        [up] = [e for e in events if isinstance(e, NetMapUpdate)]
        assert len(up.netmap.peers) == 3 and eng._s.engine.counters.malformed == 3
        await eng.aclose()

    run(t())
