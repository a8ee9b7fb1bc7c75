"""UserspaceEngine on a fake System (no root, no OS changes): diffs only, prefs to the right subsystem, restore."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from engine.filter import DROP
from engine.filter.filter import DropReason
from engine.ipn.exitnode import ident_of_node, resolve_exit_node
from engine.router.exitnode import BYPASS_MARK, ExitRouteConfig
from engine.router.inputfw import InputConfig
from engine.router.nft import ForwardConfig
from engine.tailcfg import MapResponse
from engine.types.keys import DiscoPrivate, NodePrivate, NodePublic
from engine.wgengine.options import EngineOptions
from engine.wgengine.reconfig import RouterConfig
from engine.wgengine.userspace import UserspaceEngine
from tests.unit.dataplane.packets import udp_packet
from tests.unit.wgengine.fakes import EXIT_ALLOWED, NOW, FakeWorld, Prefs, peer, session_netmap

TUN = "mesh9"
K2, K3 = bytes([2]) * 32, bytes([3]) * 32
ALLOW_ALL = {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def started(world: FakeWorld, prefs: Prefs | None = None, **kw) -> UserspaceEngine:
    e = UserspaceEngine(
        EngineOptions(tun_name=TUN, run_dir=kw.pop("run_dir", EngineOptions().run_dir)),
        world.system(**kw),
        NodePrivate.generate(),
        DiscoPrivate.generate(),
        logging.getLogger("t"),
    )
    if prefs is not None:
        e.reconfig(None, prefs)
    await e.start()
    return e


def feed(e: UserspaceEngine, nm, prefs: Prefs) -> None:
    """What TailnetEngine does: resolve the prefs' exit node in the netmap, then reconfig."""
    spec = prefs.exit_node_id or prefs.exit_node_ip
    exit_node = resolve_exit_node(spec, nm.sorted_peers(), ident_of_node) if nm is not None else None
    e.reconfig(nm, prefs, exit_node=exit_node)


def test_start_cleans_leftovers_guards_input_and_marks_wireguard(tmp_path):
    async def t():
        w = FakeWorld()
        e = await started(w, run_dir=tmp_path)
        assert w.log.names("exit") == ["cleanup_leftovers"]
        assert w.log.names("fwd") == ["cleanup_leftovers", "set_input"]  # leftovers first, then the input guard
        assert w.log.of("fwd", "set_input") == [(InputConfig(TUN),)]
        assert (BYPASS_MARK,) in w.log.of("device", "set_fwmark")
        assert w.log.of("router", "up") == [(1280,)]
        assert w.bypass_installed == 1 and w.os_dns_args == ("auto", TUN, e.journal)
        # one journal of OS changes for routing and DNS (here the fallback in run_dir: no composition root)
        assert w.journals == {"exit": e.journal, "fwd": e.journal}
        assert e.journal.path == tmp_path / "changes.jsonl"
        assert w.log.of("tun", "set_filter"), "AllowNone filter installed before the first netmap"
        assert e.running and e.tun_up and e.dns is w.objs["dns"]
        await e.aclose()

    run(t())


def test_reconfig_applies_diffs_only():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        s, nm = session_netmap()
        w.log.clear()
        feed(e, nm, p)
        assert sorted(a[0] for a in w.log.of("device", "upsert_peer")) == [K2, K3]
        assert len(w.log.of("router", "set")) == 1
        assert e.counters.reconfigs == 1 and e.counters.peer_upserts == 2
        # the same (full) netmap again: no WireGuard, route or firewall change
        w.log.clear()
        feed(e, nm, p)
        assert w.log.of("device") == [] and w.log.of("router") == [] and w.log.of("exit") == []
        assert w.log.of("fwd") == [] and w.log.of("tun") == []
        # an empty delta: nothing at all runs
        w.log.clear()
        feed(e, s.apply(MapResponse(), now=NOW + 1), p)
        assert w.log.calls == []
        # one peer changes its addresses: only that one is touched
        nm2 = s.apply(MapResponse(peers_changed=(peer(2, addresses=("100.64.0.22/32",)),)), now=NOW + 2)
        feed(e, nm2, p)
        assert [a[0] for a in w.log.of("device", "upsert_peer")] == [K2] and w.log.of("device", "remove_peer") == []
        # a peer goes away: one removal
        w.log.clear()
        feed(e, s.apply(MapResponse(peers_removed=(3,)), now=NOW + 3), p)
        assert w.log.of("device", "remove_peer") == [(K3,)] and w.log.of("device", "upsert_peer") == []
        doc = e.debug_doc()
        assert (doc["Reconfigs"], doc["PeerUpserts"], doc["PeerRemoves"]) == (3, 3, 1)
        assert [d["ID"] for d in doc["Peers"]] == [2]
        await e.aclose()

    run(t())


def test_exit_node_select_allow_lan_and_clear():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        _, nm = session_netmap()
        feed(e, nm, p)
        dev = w.objs["device"]
        assert dev.allowed[K3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
        w.log.clear()
        p = Prefs(exit_node_id="n3CNTRL")
        feed(e, nm, p)
        assert e.exit_node_peer.id == 3 and e.debug_doc()["ExitNodeID"] == 3
        assert w.log.of("exit", "set") == [(ExitRouteConfig(TUN, allow_lan=False),)]
        assert dev.allowed[K3] == ("0.0.0.0/0", "100.64.0.3/32", "::/0", "fd7a:115c:a1e0::3/128")
        assert w.log.of("router", "set") == [], "the defaults never become main-table routes: table 52 is ExitRouter's"
        assert w.log.of("dns", "set")[-1][2:] == (nm.peers[3], True), "DNS follows the exit node"
        assert w.log.of("fwd") == [], "using an exit node is not forwarding"
        p = dataclasses.replace(p, exit_node_allow_lan_access=True)
        feed(e, nm, p)
        assert w.log.of("exit", "set")[-1] == (ExitRouteConfig(TUN, allow_lan=True),)
        p = Prefs()
        feed(e, nm, p)
        assert w.log.of("exit", "set")[-1] == (None,) and e.exit_node_peer is None
        assert dev.allowed[K3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
        n_sets = len(w.log.of("exit", "set"))
        feed(e, nm, Prefs())  # unchanged: nothing runs
        assert len(w.log.of("exit", "set")) == n_sets
        await e.aclose()

    run(t())


def test_unknown_exit_node_fails_closed_and_logged_out_removes_routing():
    async def t():
        w = FakeWorld()
        p = Prefs(exit_node_ip="100.64.0.99")
        e = await started(w, p)
        assert w.log.of("exit", "set") == [], "no exit routing before the first netmap (login must reach control)"
        _, nm = session_netmap()
        feed(e, nm, p)
        assert e.exit_node_peer is None
        assert w.log.of("exit", "set") == [(ExitRouteConfig(TUN),)]  # traffic to the TUN, no peer takes it
        w.log.clear()
        feed(e, None, p)  # needs login: the browser must reach the control server
        assert w.log.of("exit", "set") == [(None,)]
        assert sorted(a[0] for a in w.log.of("device", "remove_peer")) == [K2, K3]
        assert w.log.of("router", "set") == [(RouterConfig(local_addrs=("100.64.0.1/32", "fd7a:115c:a1e0::1/128")),)]
        assert w.log.of("dns", "set") == [(False, False, None, None)], "OS DNS restored"
        assert e.filter.explain_in(udp_packet("100.64.0.3", "100.64.0.1", 1, 2, b"x"))[0] is DROP
        assert e.applied_netmap is None and e.debug_doc()["Peers"] == []
        feed(e, nm, p)
        assert w.log.of("exit", "set")[-1] == (ExitRouteConfig(TUN),)
        await e.aclose()

    run(t())


def test_shields_up_reaches_the_filter_only():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        _, nm = session_netmap(packet_filter=(ALLOW_ALL,))
        feed(e, nm, p)
        syn = udp_packet("100.64.0.2", "100.64.0.1", 5000, 7, b"x")
        assert e.filter.explain_in(syn)[0] is not DROP
        w.log.clear()
        feed(e, nm, Prefs(shields_up=True))
        assert e.filter.explain_in(syn) == (DROP, DropReason.NO_RULE)
        assert w.objs["tun"].filter is e.filter
        assert {c[0] for c in w.log.calls} <= {"tun", "dns", "peerapi"} and w.log.of("device") == []
        assert e.debug_doc()["Prefs"]["ShieldsUp"] is True
        feed(e, nm, Prefs())
        assert e.filter.explain_in(syn)[0] is not DROP
        await e.aclose()

    run(t())


def test_accept_dns_reaches_magicdns():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        _, nm = session_netmap()
        feed(e, nm, p)
        assert w.log.of("dns", "set")[-1][:2] == (True, True)
        w.log.clear()
        feed(e, nm, Prefs(corp_dns=False))
        assert w.log.of("dns", "set") == [(True, False, None, False)]
        assert w.log.of("device") == [] and w.log.of("exit") == [] and w.log.of("fwd") == []
        await e.aclose()

    run(t())


def test_accept_routes_and_advertising_reach_wireguard_router_and_forwarding():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        _, nm = session_netmap(packet_filter=())
        feed(e, nm, p)
        assert "10.9.0.0/16" not in w.objs["device"].allowed[K3]
        feed(e, nm, Prefs(route_all=True))
        assert "10.9.0.0/16" in w.objs["device"].allowed[K3]
        assert "10.9.0.0/16" in w.log.of("router", "set")[-1][0].routes
        to_inet = udp_packet("100.64.0.2", "198.51.100.7", 5000, 53, b"x")
        assert e.filter.explain_in(to_inet)[1] == DropReason.DST_NOT_LOCAL
        w.log.clear()
        feed(e, nm, Prefs(advertise_routes=("0.0.0.0/0", "::/0", "10.2.0.1/24")))
        assert w.log.of("fwd", "set") == [(ForwardConfig(TUN),)]
        assert e.filter.explain_in(to_inet) == (DROP, DropReason.NO_RULE)  # now local, but no rule allows it
        assert e.debug_doc()["Prefs"]["AdvertiseRoutes"] == ["10.2.0.0/24"]
        assert e.debug_doc()["Prefs"]["AdvertiseExitNode"] is True
        feed(e, nm, Prefs())
        assert w.log.of("fwd", "set")[-1] == (None,)
        await e.aclose()

    run(t())


def test_peerapi_listens_on_our_addresses_and_is_announced():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        _, nm = session_netmap()
        feed(e, nm, p)
        assert w.log.of("peerapi", "set_addresses") == [(("100.64.0.1", "fd7a:115c:a1e0::1"),)]
        svc = {s["Proto"] if isinstance(s, dict) else s.proto for s in e.peerapi_services() or ()}
        assert {"peerapi4", "peerapi6", "peerapi-dns-proxy"} <= svc
        await e.aclose()

    run(t())


def test_malformed_netmap_entries_are_counted_and_skipped():
    async def t():
        w = FakeWorld()
        p = Prefs()
        e = await started(w, p)
        bad = (  # what the wire decoder lets through (it already refuses wrong types)
            peer(4, allowed_ips=("100.64.0.4/32", "not-a-prefix")),  # one bad prefix: the peer still works
            peer(5, key=NodePublic.zero()),  # no key: skipped
            peer(6, addresses=("100.64.0.6/99",)),  # unusable address: a peer without allowed IPs
            peer(7, endpoints=("garbage", "[::1]:x"), derp="127.3.3.40:x"),  # no usable endpoint: DERP only
        )
        _, nm = session_netmap(peer(2), *bad, packet_filter=({"SrcIPs": ["bogus"], "DstPorts": []},))
        feed(e, nm, p)
        dev = w.objs["device"]
        assert set(dev.allowed) == {K2, bytes([4]) * 32, bytes([6]) * 32, bytes([7]) * 32}
        assert dev.allowed[bytes([4]) * 32] == ("100.64.0.4/32",) and dev.allowed[bytes([6]) * 32] == ()
        assert e.counters.malformed == 3
        assert e.applied_netmap is nm and len(e.debug_doc()["Peers"]) == 5
        # later deltas keep counting, and the engine keeps working
        feed(e, nm, Prefs(route_all=True))
        assert e.counters.malformed == 6 and e.running
        await e.aclose()

    run(t())


def test_wg_config_skips_entries_it_cannot_read():
    from engine.wgengine.reconfig import ReconfigOptions, wg_config

    problems: list[str] = []
    _, nm = session_netmap(peer(2), peer(6, addresses=None, allowed_ips=None), peer(8, key=None))
    cfg = wg_config(nm, ReconfigOptions(), problems=problems)
    assert [p.node_id for p in cfg.peers.values()] == [2]
    assert problems == ["node 6: unusable (TypeError)", "node 8: no node key"]


def test_aclose_restores_everything_even_when_one_close_raises():
    async def t():
        w = FakeWorld()
        p = Prefs(exit_node_id="n3CNTRL", advertise_routes=("10.2.0.0/24",))
        e = await started(w, p)
        _, nm = session_netmap()
        feed(e, nm, p)
        w.log.fail[("exit", "set")] = RuntimeError("ip rule failed")
        w.log.fail[("router", "close")] = OSError("link gone")
        w.log.clear()
        await e.aclose()
        closed = [(c[0], c[1]) for c in w.log.calls]
        for step in [
            ("osdns", "set"),
            ("exit", "set"),
            ("fwd", "set"),
            ("fwd", "close"),
            ("router", "close"),
            ("device", "close"),
            ("tun", "close"),
            ("peerapi", "close"),
            ("dns", "close"),
        ]:
            assert step in closed, f"{step} not restored: {closed}"
        assert w.log.of("osdns", "set")[0] == (None,) and w.log.of("fwd", "set") == [(None,)]
        assert closed.index(("device", "close")) < closed.index(("dns", "close")), "OS restored before async closes"
        assert not e.running and e.dns is None
        w.log.clear()
        await e.aclose()  # safe twice
        assert w.log.calls == []

    run(t())


def test_a_failed_start_undoes_what_it_built():
    async def t():
        w = FakeWorld()
        w.log.fail[("device", "up")] = OSError("/dev/net/tun: permission denied")
        e = UserspaceEngine(EngineOptions(tun_name=TUN), w.system(), NodePrivate.generate(), DiscoPrivate.generate())
        with pytest.raises(OSError, match="permission denied"):
            await e.start()
        closed = [(c[0], c[1]) for c in w.log.calls]
        for step in [("exit", "set"), ("fwd", "set"), ("fwd", "close"), ("device", "close"), ("tun", "close")]:
            assert step in closed
        assert ("router", "up") not in closed and not e.running

    run(t())


def test_magicdns_failure_leaves_the_node_running_without_it():
    async def t():
        w = FakeWorld()
        e = await started(w, Prefs(), dns_fails=True)
        assert e.running and e.dns is None and e.debug_doc()["MagicDNS"] is False
        _, nm = session_netmap()
        feed(e, nm, Prefs())
        assert e.counters.peer_upserts == 2
        await e.aclose()

    run(t())


def test_prefs_before_start_are_applied_at_start_and_node_key_rotation():
    async def t():
        w = FakeWorld()
        e = await started(w, Prefs(advertise_routes=("10.2.0.0/24",)))
        assert w.log.of("fwd", "set") == [(ForwardConfig(TUN),)]
        new = NodePrivate.generate()
        e.set_node_key(new)
        assert w.log.of("device", "set_private_key")[-1] == (new.raw,)
        assert e.endpoints() == (("192.0.2.100:41641",), (1,))
        await e.aclose()

    run(t())


def test_debug_doc_has_the_engine_keys():
    async def t():
        w = FakeWorld()
        p = Prefs(exit_node_id="n3CNTRL")
        e = await started(w, p)
        _, nm = session_netmap(peer(2), peer(3, allowed_ips=EXIT_ALLOWED))
        feed(e, nm, p)
        doc = e.debug_doc()
        assert list(doc) == [
            "ListenPort",
            "Reconfigs",
            "PeerUpserts",
            "PeerRemoves",
            "Prefs",
            "ExitNodeID",
            "MagicDNS",
            "Filter",
            "Self",
            "Peers",
        ]  # no magicsock in the fake System
        assert doc["Prefs"] == {
            "ExitNode": "n3CNTRL",
            "ExitNodeAllowLANAccess": False,
            "AdvertiseExitNode": False,
            "AdvertiseRoutes": [],
            "AcceptDNS": True,
            "AcceptRoutes": False,
            "ShieldsUp": False,
        }
        addrs = ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]
        assert doc["Self"] == {"ID": 1, "Name": "me.mesh.test.", "Addresses": addrs, "AllowedIPs": addrs}
        p3 = doc["Peers"][1]
        assert set(p3) == {
            "ID",
            "Name",
            "Key",
            "Addresses",
            "AllowedIPs",
            "Endpoints",
            "DiscoKey",
            "HomeDERP",
            "Online",
            "ExitNodeOption",
        }
        assert p3["ExitNodeOption"] is True and doc["Peers"][0]["ExitNodeOption"] is False
        assert doc["ListenPort"] == 41641 and doc["Filter"]["Rules"] == 0
        await e.aclose()

    run(t())
