"""Prefs through TailnetEngine.reconfigure (the backend's path) on the fake System: exit node, advertise, routes."""

from __future__ import annotations

import pytest

from engine.control.client import State, Status, StatusChanged
from engine.filter import DROP
from engine.filter.filter import DropReason
from engine.ipn.engine_api import EngineFailed
from engine.router.exitnode import ExitRouteConfig
from engine.router.nft import ForwardConfig
from tests.unit.dataplane.packets import udp_packet
from tests.unit.ipn.harness import TUN, config, deliver, reconfigure, run, running
from tests.unit.wgengine.fakes import session_netmap

EXIT = ("0.0.0.0/0", "::/0")
N3 = "n3CNTRL"  # node3's StableID: what the backend passes once a client chose it (ExitNodeID)
K3 = bytes([3]) * 32
NODE3_ONLY = ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
NODE3_EXIT = ("0.0.0.0/0", "100.64.0.3/32", "::/0", "fd7a:115c:a1e0::3/128")
ALLOW_ALL = {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}


def hostinfo(eng):
    """The Hostinfo control is sent (RoutableIPs, ExitNodeID, ...)."""
    return eng._s.client.opts.hostinfo


def test_exit_node_select_allow_lan_and_clear():
    async def t():
        eng, w, events, _ = await running()
        e = eng._s.engine
        _, nm = session_netmap()
        deliver(eng, nm)
        dev = w.objs["device"]
        assert dev.allowed[K3] == NODE3_ONLY
        assert [p.node_id for p in eng.status().netmap.peers if p.exit_node_option] == [3]

        assert await reconfigure(eng, events, config(exit_node_id=N3)) == []
        assert eng.debug_status()["Prefs"]["ExitNode"] == N3 and e.exit_node_peer.id == 3
        assert eng.debug_status()["ExitNodeID"] == 3 and hostinfo(eng).exit_node_id == N3
        assert w.log.of("exit", "set")[-1] == (ExitRouteConfig(TUN, allow_lan=False),)
        assert dev.allowed[K3] == NODE3_EXIT
        rc = w.log.of("router", "set")[-1][0]
        assert not set(EXIT) & set(rc.routes)  # table 52 is ExitRouter's

        assert await reconfigure(eng, events, config(exit_node_id=N3, exit_node_allow_lan_access=True)) == []
        assert w.log.of("exit", "set")[-1] == (ExitRouteConfig(TUN, allow_lan=True),)
        assert await reconfigure(eng, events, config()) == []
        assert w.log.of("exit", "set")[-1] == (None,) and e.exit_node_peer is None
        assert dev.allowed[K3] == NODE3_ONLY and hostinfo(eng).exit_node_id is None
        n_sets = len(w.log.of("exit", "set"))
        await reconfigure(eng, events, config())  # unchanged: nothing runs
        assert len(w.log.of("exit", "set")) == n_sets
        await eng.aclose()

    run(t())


def test_exit_node_ip_chosen_before_the_netmap():
    async def t():
        eng, w, events, _ = await running()
        assert await reconfigure(eng, events, config(exit_node_ip="100.64.0.3")) == []
        assert w.log.of("exit", "set") == []  # no routes before the first netmap
        deliver(eng, session_netmap()[1])
        assert eng._s.engine.exit_node_peer.id == 3 and w.objs["device"].allowed[K3] == NODE3_EXIT
        assert w.log.of("exit", "set") == [(ExitRouteConfig(TUN),)]
        await eng.aclose()

    run(t())


def test_unknown_exit_node_fails_closed():
    async def t():
        eng, w, events, _ = await running()
        await reconfigure(eng, events, config(exit_node_ip="100.64.0.99"))  # an IP chosen before the netmap came
        assert w.log.of("exit", "set") == []  # no routes before the first netmap
        deliver(eng, session_netmap()[1])
        assert eng._s.engine.exit_node_peer is None and eng.debug_status()["ExitNodeID"] is None
        assert w.log.of("exit", "set") == [(ExitRouteConfig(TUN),)]  # traffic to the TUN, no peer takes it
        assert w.objs["device"].allowed[K3] == NODE3_ONLY
        await eng.aclose()

    run(t())


def test_logged_out_removes_exit_routing():
    async def t():
        eng, w, events, _ = await running()
        await reconfigure(eng, events, config(exit_node_id=N3))
        _, nm = session_netmap()
        deliver(eng, nm)
        assert w.log.of("exit", "set") == [(ExitRouteConfig(TUN),)]
        # needs login: the browser must reach the control server
        eng._on_control_event(eng._s, StatusChanged(Status(state=State.NEEDS_LOGIN)))
        assert w.log.of("exit", "set")[-1] == (None,)
        assert eng._s.engine.filter.explain_in(udp_packet("100.64.0.3", "100.64.0.1", 1, 2, b"x"))[0] is DROP
        deliver(eng, nm)
        assert w.log.of("exit", "set")[-1] == (ExitRouteConfig(TUN),)
        await eng.aclose()

    run(t())


def test_advertise_exit_node_and_routes():
    async def t():
        eng, w, events, _ = await running()
        e = eng._s.engine
        deliver(eng, session_netmap(packet_filter=())[1])  # empty filter: block all inbound
        to_inet = udp_packet("100.64.0.2", "198.51.100.7", 5000, 53, b"x")
        assert e.filter.explain_in(to_inet)[1] == DropReason.DST_NOT_LOCAL
        assert await reconfigure(eng, events, config(advertise_routes=EXIT)) == []
        assert w.log.of("fwd", "set")[-1] == (ForwardConfig(TUN),)
        assert hostinfo(eng).routable_ips == EXIT and eng.debug_status()["Prefs"]["AdvertiseExitNode"] is True
        assert e.filter.explain_in(to_inet) == (DROP, DropReason.NO_RULE)  # now local, but no rule allows it
        assert await reconfigure(eng, events, config(advertise_routes=("10.1.0.0/16", "10.2.0.1/24", *EXIT))) == []
        assert eng.debug_status()["Prefs"]["AdvertiseRoutes"] == ["10.1.0.0/16", "10.2.0.0/24"]
        assert hostinfo(eng).routable_ips == ("10.1.0.0/16", "10.2.0.0/24", *EXIT)
        await reconfigure(eng, events, config())
        assert w.log.of("fwd", "set")[-1] == (None,) and hostinfo(eng).routable_ips is None
        n_fwd = len(w.log.of("fwd", "set"))
        [ev] = await reconfigure(eng, events, config(advertise_routes=("10.300.0.0/16",)))
        assert isinstance(ev, EngineFailed) and "'10.300.0.0/16' is not a CIDR" in ev.message
        assert eng.debug_status()["Prefs"]["AdvertiseRoutes"] == [] and hostinfo(eng).routable_ips is None
        assert len(w.log.of("fwd", "set")) == n_fwd  # refused prefs change nothing
        await eng.aclose()

    run(t())


def test_exit_node_and_advertising_one_exclude_each_other():
    async def t():
        eng, w, events, _ = await running()
        await reconfigure(eng, events, config(exit_node_id=N3))
        [ev] = await reconfigure(eng, events, config(exit_node_id=N3, advertise_routes=EXIT))
        assert isinstance(ev, EngineFailed) and "at the same time" in ev.message
        prefs = eng.debug_status()["Prefs"]
        assert prefs["ExitNode"] == N3 and not prefs["AdvertiseExitNode"]
        # the other way round: advertising, then choosing one
        await reconfigure(eng, events, config(advertise_routes=EXIT))
        [ev] = await reconfigure(eng, events, config(exit_node_ip="100.64.0.3", advertise_routes=EXIT))
        assert isinstance(ev, EngineFailed) and "at the same time" in ev.message
        prefs = eng.debug_status()["Prefs"]
        assert prefs["ExitNode"] is None and prefs["AdvertiseExitNode"]
        assert w.log.of("fwd", "set")[-1] == (ForwardConfig(TUN),)
        await eng.aclose()

    run(t())


def test_accept_routes():
    async def t():
        eng, w, events, _ = await running()
        deliver(eng, session_netmap()[1])
        dev = w.objs["device"]
        assert "10.9.0.0/16" not in dev.allowed[K3]
        await reconfigure(eng, events, config(route_all=True))
        assert "10.9.0.0/16" in dev.allowed[K3]
        assert "10.9.0.0/16" in w.log.of("router", "set")[-1][0].routes
        # with node3 as exit node too: its subnet and address are main-table routes, the defaults never are
        await reconfigure(eng, events, config(route_all=True, exit_node_id=N3))
        rc = w.log.of("router", "set")[-1][0]
        assert {"10.9.0.0/16", "100.64.0.3/32"} <= set(rc.routes) and not set(EXIT) & set(rc.routes)
        await reconfigure(eng, events, config())
        assert "10.9.0.0/16" not in dev.allowed[K3] and "10.9.0.0/16" not in w.log.of("router", "set")[-1][0].routes
        await eng.aclose()

    run(t())


def test_shields_up():
    async def t():
        eng, w, events, _ = await running()
        e = eng._s.engine
        deliver(eng, session_netmap(packet_filter=(ALLOW_ALL,))[1])
        syn = udp_packet("100.64.0.2", "100.64.0.1", 5000, 7, b"x")
        assert e.filter.explain_in(syn)[0] is not DROP
        await reconfigure(eng, events, config(shields_up=True))
        assert e.filter.explain_in(syn) == (DROP, DropReason.NO_RULE)
        await reconfigure(eng, events, config())
        assert e.filter.explain_in(syn)[0] is not DROP
        await eng.aclose()

    run(t())


@pytest.mark.parametrize(
    "field,spec,want",
    [
        ("exit_node_ip", "100.64.0.3", 3),
        ("exit_node_ip", "fd7a:115c:a1e0::3", 3),
        ("exit_node_id", N3, 3),
        ("exit_node_ip", "100.64.0.9", None),
        ("exit_node_id", "nNOPE", None),
        ("exit_node_id", "", None),
        ("exit_node_ip", "not-an-ip", None),
    ],
)
def test_exit_node_resolved_from_id_or_ip(field, spec, want):
    """The backend hands over ExitNodeID (names are resolved to it by the client) or ExitNodeIP."""

    async def t():
        eng, w, events, _ = await running()
        deliver(eng, session_netmap()[1])
        assert await reconfigure(eng, events, config(**{field: spec})) == []
        p = eng._s.engine.exit_node_peer
        assert (p.id if p is not None else None) == want and eng.debug_status()["ExitNodeID"] == want
        using = bool(spec)  # an exit node chosen: routed to the TUN even when no peer takes it (fail closed)
        assert w.log.of("exit", "set") == ([(ExitRouteConfig(TUN),)] if using else [])
        await eng.aclose()

    run(t())


def test_advertised_routes_canonical():
    async def t():
        eng, w, events, _ = await running()
        messy = (" 10.0.0.1/8", "10.0.0.0/8 ", "fd00::1/64")
        assert await reconfigure(eng, events, config(advertise_routes=messy)) == []
        assert eng.debug_status()["Prefs"]["AdvertiseRoutes"] == ["10.0.0.0/8", "fd00::/64"]
        assert hostinfo(eng).routable_ips == ("10.0.0.0/8", "fd00::/64")
        await eng.aclose()

    run(t())
