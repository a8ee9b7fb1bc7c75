"""The serve engine's node on recording fakes, prefs via DaemonEngine.reconfigure: exit node, advertise, routes."""

from __future__ import annotations

import pytest

from engine.filter import DROP
from engine.filter.filter import DropReason
from engine.ipn.engine_api import EngineFailed
from engine.keys import NodePublic
from engine.netmap import MapSession
from engine.reconfig import RouterConfig, router_config, wg_config
from engine.router.exitnode import BYPASS_MARK, ExitRouteConfig
from engine.router.linux import LinuxRouter
from engine.router.nft import ForwardConfig
from engine.tailcfg import Hostinfo, MapResponse
from engine.tailcfg import Node as TNode
from tests.dataplane.packets import udp_packet
from tests.node.fakenode import config, engine_node, reconfigure

NOW = 1_800_000_000.0
SELF = TNode(id=1, name="me.mesh.test.", key=NodePublic(b"\x01" * 32),
             addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"))
EXIT_ALLOWED = ("100.64.0.3/32", "fd7a:115c:a1e0::3/128", "0.0.0.0/0", "::/0", "10.9.0.0/16")
EXIT = ("0.0.0.0/0", "::/0")
N3 = "n3CNTRL"  # node3's StableID: what the backend passes once a client chose it (ExitNodeID)


def peer(i: int, **kw) -> TNode:
    base = dict(id=i, stable_id=f"n{i}CNTRL", name=f"node{i}.mesh.test.", key=NodePublic(bytes([i]) * 32),
                addresses=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"), endpoints=(f"192.0.2.{i}:41641",),
                hostinfo=Hostinfo(hostname=f"host{i}"))
    base.update(kw)
    return TNode(**base)


def netmap(**resp):
    s = MapSession()
    return s.apply(MapResponse(node=SELF, peers=(peer(2), peer(3, allowed_ips=EXIT_ALLOWED)), **resp), now=NOW)


@pytest.fixture
def node(tmp_path):
    return engine_node(tmp_path)


def test_startup_cleans_leftovers_and_marks_wireguard(node):
    eng, n, f = node
    assert [c[0] for c in f["exit"].calls] == ["cleanup_leftovers"]
    assert [c[0] for c in f["fwd"].calls] == ["cleanup_leftovers", "set_input"]  # leftovers first, then the input guard
    assert f["fwd"].last("set_input")[0].tun == "mesh9"
    assert ("set_fwmark", (BYPASS_MARK,), {}) in f["device"].calls


def test_exit_node_select_allow_lan_and_clear(node):
    eng, n, f = node
    nm = netmap()
    n.apply_netmap(nm)
    k3 = bytes([3]) * 32
    assert f["device"].allowed[k3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    assert n.exit_node_options() == [nm.peers[3]]

    assert reconfigure(eng, config(exit_node_id=N3)) == []
    assert n.prefs.exit_node == N3 and n.exit_node_peer.id == 3
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9", allow_lan=False),)
    assert f["device"].allowed[k3] == ("0.0.0.0/0", "100.64.0.3/32", "::/0", "fd7a:115c:a1e0::3/128")
    rc = f["router"].last("set")[0]
    assert "0.0.0.0/0" not in rc.routes and "::/0" not in rc.routes  # table 52 is ExitRouter's

    reconfigure(eng, config(exit_node_id=N3, exit_node_allow_lan_access=True))
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9", allow_lan=True),)
    reconfigure(eng, config())
    assert f["exit"].last("set") == (None,) and n.exit_node_peer is None
    assert f["device"].allowed[k3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    n_sets = len([c for c in f["exit"].calls if c[0] == "set"])
    reconfigure(eng, config())  # unchanged: nothing runs
    assert len([c for c in f["exit"].calls if c[0] == "set"]) == n_sets


def test_unknown_exit_node_fails_closed(node):
    eng, n, f = node
    reconfigure(eng, config(exit_node_ip="100.64.0.99"))  # an IP chosen before the netmap came
    assert [c for c in f["exit"].calls if c[0] == "set"] == []  # no routes before the first netmap
    n.apply_netmap(netmap())
    assert n.exit_node_peer is None
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)  # traffic to the TUN, no peer takes it


def test_logged_out_removes_exit_routing(node):
    eng, n, f = node
    reconfigure(eng, config(exit_node_id=N3))
    n.apply_netmap(netmap())
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)
    n.clear_dataplane()  # needs login: the browser must reach the control server
    assert f["exit"].last("set") == (None,)
    assert n.filter.explain_in(udp_packet("100.64.0.3", "100.64.0.1", 1, 2, b"x"))[0] is DROP
    n.apply_netmap(netmap())
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)


def test_advertise_exit_node_and_routes(node):
    eng, n, f = node
    n.apply_netmap(netmap(packet_filter=()))  # empty filter: block all inbound
    to_inet = udp_packet("100.64.0.2", "198.51.100.7", 5000, 53, b"x")
    assert n.filter.explain_in(to_inet)[1] == DropReason.DST_NOT_LOCAL
    reconfigure(eng, config(advertise_routes=EXIT))
    assert f["fwd"].last("set") == (ForwardConfig("mesh9"),)
    assert n.prefs.routable_ips() == ("0.0.0.0/0", "::/0")
    assert n.filter.explain_in(to_inet) == (DROP, DropReason.NO_RULE)  # now local, but no rule allows it
    reconfigure(eng, config(advertise_routes=("10.1.0.0/16", "10.2.0.1/24", *EXIT)))
    assert n.prefs.advertise_routes == ("10.1.0.0/16", "10.2.0.0/24")
    assert n.prefs.routable_ips() == ("10.1.0.0/16", "10.2.0.0/24", "0.0.0.0/0", "::/0")
    reconfigure(eng, config())
    assert f["fwd"].last("set") == (None,)
    [ev] = reconfigure(eng, config(advertise_routes=("10.300.0.0/16",)))
    assert isinstance(ev, EngineFailed) and "'10.300.0.0/16' is not a CIDR" in ev.message
    assert n.prefs.advertise_routes == ()


def test_exit_node_and_advertising_one_exclude_each_other(node):
    eng, n, f = node
    reconfigure(eng, config(exit_node_id=N3))
    [ev] = reconfigure(eng, config(exit_node_id=N3, advertise_routes=EXIT))
    assert isinstance(ev, EngineFailed) and "at the same time" in ev.message
    assert n.prefs.exit_node == N3 and not n.prefs.advertise_exit_node


def test_accept_routes(node):
    eng, n, f = node
    n.apply_netmap(netmap())
    k3 = bytes([3]) * 32
    assert "10.9.0.0/16" not in f["device"].allowed[k3]
    reconfigure(eng, config(route_all=True))
    assert "10.9.0.0/16" in f["device"].allowed[k3]
    assert "10.9.0.0/16" in f["router"].last("set")[0].routes


def test_shields_up(node):
    eng, n, f = node
    allow_all = {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
    n.apply_netmap(netmap(packet_filter=(allow_all,)))
    syn = udp_packet("100.64.0.2", "100.64.0.1", 5000, 7, b"x")
    assert n.filter.explain_in(syn)[0] is not DROP
    reconfigure(eng, config(shields_up=True))
    assert n.filter.explain_in(syn) == (DROP, DropReason.NO_RULE)
    reconfigure(eng, config())
    assert n.filter.explain_in(syn)[0] is not DROP


@pytest.mark.parametrize("field,spec,want", [
    ("exit_node_ip", "100.64.0.3", 3), ("exit_node_ip", "fd7a:115c:a1e0::3", 3), ("exit_node_id", N3, 3),
    ("exit_node_ip", "100.64.0.9", None), ("exit_node_id", "nNOPE", None), ("exit_node_id", "", None),
])
def test_exit_node_resolved_from_id_or_ip(tmp_path, field, spec, want):
    """The backend hands over ExitNodeID (names are resolved to it by the client) or ExitNodeIP."""
    eng, n, f = engine_node(tmp_path)
    n.apply_netmap(netmap())
    reconfigure(eng, config(**{field: spec}))
    assert (n.exit_node_peer.id if n.exit_node_peer is not None else None) == want


def test_advertised_routes_canonical(node):
    eng, n, f = node
    reconfigure(eng, config(advertise_routes=(" 10.0.0.1/8", "10.0.0.0/8 ", "fd00::1/64")))
    assert n.prefs.advertise_routes == ("10.0.0.0/8", "fd00::/64")


def test_router_config_keeps_defaults_out_of_main():
    nm = netmap()
    from engine.reconfig import ReconfigOptions

    wg = wg_config(nm, ReconfigOptions(exit_node_id=3, accept_routes=True))
    rc = router_config(nm, wg)
    assert "10.9.0.0/16" in rc.routes and "100.64.0.3/32" in rc.routes
    assert not {"0.0.0.0/0", "::/0"} & set(rc.routes)


def test_linux_router_service_addresses():
    calls = []
    r = LinuxRouter("mesh0", runner=lambda argv, batch: calls.append(batch.splitlines()),
                    service_addrs=("100.100.100.100/32", "fd7a:115c:a1e0::53/128"))
    r.up(1280)
    assert calls[-1] == ["addr replace 100.100.100.100/32 dev mesh0 scope host",
                         "addr replace fd7a:115c:a1e0::53/128 dev mesh0 nodad preferred_lft 0"]
    r.set(RouterConfig(local_addrs=("100.64.0.1/32",), routes=("100.64.0.2/32",)))
    assert calls[-1] == ["addr replace 100.64.0.1/32 dev mesh0", "route replace 100.64.0.2/32 dev mesh0"]
    r.set(RouterConfig())  # logged out: quad-100 stays while the node runs
    assert calls[-1] == ["route del 100.64.0.2/32 dev mesh0", "addr del 100.64.0.1/32 dev mesh0"]
    r.close()
    assert calls[-1] == ["addr del 100.100.100.100/32 dev mesh0", "addr del fd7a:115c:a1e0::53/128 dev mesh0"]
