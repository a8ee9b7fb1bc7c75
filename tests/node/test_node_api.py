"""Node's run-time API and reconfiguration with recording fakes (no OS changes): exit node, advertise, routes."""

from __future__ import annotations

import logging

import pytest

from engine.daemon import Node, NodePrefs, NodeState, build_parser, canonical_routes, resolve_exit_node
from engine.filter import DROP
from engine.filter.filter import DropReason
from engine.keys import NodePublic
from engine.netmap import MapSession
from engine.reconfig import RouterConfig, router_config, wg_config
from engine.router.exitnode import BYPASS_MARK, ExitRouteConfig
from engine.router.linux import LinuxRouter
from engine.router.nft import ForwardConfig
from engine.tailcfg import Hostinfo, MapResponse
from engine.tailcfg import Node as TNode
from tests.dataplane.packets import udp_packet

NOW = 1_800_000_000.0
SELF = TNode(id=1, name="me.mesh.test.", key=NodePublic(b"\x01" * 32),
             addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"))
EXIT_ALLOWED = ("100.64.0.3/32", "fd7a:115c:a1e0::3/128", "0.0.0.0/0", "::/0", "10.9.0.0/16")


def peer(i: int, **kw) -> TNode:
    base = dict(id=i, stable_id=f"n{i}CNTRL", name=f"node{i}.mesh.test.", key=NodePublic(bytes([i]) * 32),
                addresses=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"), endpoints=(f"192.0.2.{i}:41641",),
                hostinfo=Hostinfo(hostname=f"host{i}"))
    base.update(kw)
    return TNode(**base)


def netmap(**resp):
    s = MapSession()
    return s.apply(MapResponse(node=SELF, peers=(peer(2), peer(3, allowed_ips=EXIT_ALLOWED)), **resp), now=NOW)


class Rec:
    """A recording fake for Device / LinuxRouter / ExitRouter / Forwarder."""

    def __init__(self) -> None:
        self.calls: list = []
        self.listen_port = 41641
        self.allowed: dict[bytes, tuple] = {}

    def __getattr__(self, name):
        def f(*a, **kw):
            self.calls.append((name, a, kw))
            if name == "upsert_peer":
                self.allowed[a[0]] = tuple(kw["allowed_ips"])
            if name == "cleanup_leftovers":
                return []
        return f

    def last(self, name):
        return [c for c in self.calls if c[0] == name][-1][1]


@pytest.fixture
def node(tmp_path):
    args = build_parser().parse_args(["--login-server", "http://127.0.0.1:1", "--state", str(tmp_path / "s"),
                                      "--tun", "mesh9"])
    fakes = {k: Rec() for k in ("device", "router", "exit", "fwd")}
    n = Node(args, NodeState.generate(), tmp_path / "s", logging.getLogger("test"),
             device_factory=lambda: fakes["device"], router_factory=lambda: fakes["router"],
             exit_router_factory=lambda: fakes["exit"], forwarder_factory=lambda: fakes["fwd"])
    n._open_os_routing()
    n._open_dataplane()
    return n, fakes


def test_startup_cleans_leftovers_and_marks_wireguard(node):
    n, f = node
    assert [c[0] for c in f["exit"].calls] == ["cleanup_leftovers"]
    assert [c[0] for c in f["fwd"].calls] == ["cleanup_leftovers", "set_input"]  # leftovers first, then the input guard
    assert f["fwd"].last("set_input")[0].tun == "mesh9"
    assert ("set_fwmark", (BYPASS_MARK,), {}) in f["device"].calls


def test_exit_node_select_allow_lan_and_clear(node):
    n, f = node
    nm = netmap()
    n.apply_netmap(nm)
    k3 = bytes([3]) * 32
    assert f["device"].allowed[k3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    assert n.exit_node_options() == [nm.peers[3]]

    prefs = n.set_exit_node("node3")
    assert prefs.exit_node == "node3" and n.exit_node_peer.id == 3
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9", allow_lan=False),)
    assert f["device"].allowed[k3] == ("0.0.0.0/0", "100.64.0.3/32", "::/0", "fd7a:115c:a1e0::3/128")
    rc = f["router"].last("set")[0]
    assert "0.0.0.0/0" not in rc.routes and "::/0" not in rc.routes  # table 52 is ExitRouter's

    n.set_exit_node_allow_lan(True)
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9", allow_lan=True),)
    n.set_exit_node("")
    assert f["exit"].last("set") == (None,) and n.exit_node_peer is None
    assert f["device"].allowed[k3] == ("100.64.0.3/32", "fd7a:115c:a1e0::3/128")
    n_sets = len([c for c in f["exit"].calls if c[0] == "set"])
    n.set_exit_node(None)  # unchanged: nothing runs
    assert len([c for c in f["exit"].calls if c[0] == "set"]) == n_sets


def test_unknown_exit_node_fails_closed(node):
    n, f = node
    n.set_exit_node("100.64.0.99")
    assert [c for c in f["exit"].calls if c[0] == "set"] == []  # no routes before the first netmap
    n.apply_netmap(netmap())
    assert n.exit_node_peer is None
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)  # traffic to the TUN, no peer takes it


def test_logged_out_removes_exit_routing(node):
    n, f = node
    n.set_exit_node("node3")
    n.apply_netmap(netmap())
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)
    n.clear_dataplane()  # needs login: the browser must reach the control server
    assert f["exit"].last("set") == (None,)
    assert n.filter.explain_in(udp_packet("100.64.0.3", "100.64.0.1", 1, 2, b"x"))[0] is DROP
    n.apply_netmap(netmap())
    assert f["exit"].last("set") == (ExitRouteConfig("mesh9"),)


def test_advertise_exit_node_and_routes(node):
    n, f = node
    n.apply_netmap(netmap(packet_filter=()))  # empty filter: block all inbound
    to_inet = udp_packet("100.64.0.2", "198.51.100.7", 5000, 53, b"x")
    assert n.filter.explain_in(to_inet)[1] == DropReason.DST_NOT_LOCAL
    n.set_advertise_exit_node(True)
    assert f["fwd"].last("set") == (ForwardConfig("mesh9"),)
    assert n.prefs.routable_ips() == ("0.0.0.0/0", "::/0")
    assert n.filter.explain_in(to_inet) == (DROP, DropReason.NO_RULE)  # now local, but no rule allows it
    n.set_advertise_routes("10.1.0.0/16, 10.2.0.1/24")
    assert n.prefs.advertise_routes == ("10.1.0.0/16", "10.2.0.0/24")
    assert n.prefs.routable_ips() == ("10.1.0.0/16", "10.2.0.0/24", "0.0.0.0/0", "::/0")
    n.set_advertise_exit_node(False)
    n.set_advertise_routes([])
    assert f["fwd"].last("set") == (None,)
    with pytest.raises(ValueError, match="'10.300.0.0/16' is not a CIDR"):
        n.set_advertise_routes("10.300.0.0/16")


def test_exit_node_and_advertising_one_exclude_each_other(node):
    n, f = node
    n.set_exit_node("node3")
    with pytest.raises(ValueError, match="at the same time"):
        n.set_advertise_exit_node(True)
    assert n.prefs.exit_node == "node3" and not n.prefs.advertise_exit_node
    with pytest.raises(SystemExit):
        from engine.daemon import main

        main(["--login-server", "u", "--state", "s", "--exit-node", "x", "--advertise-exit-node"])


def test_accept_routes(node):
    n, f = node
    n.apply_netmap(netmap())
    k3 = bytes([3]) * 32
    assert "10.9.0.0/16" not in f["device"].allowed[k3]
    n.set_accept_routes(True)
    assert "10.9.0.0/16" in f["device"].allowed[k3]
    assert "10.9.0.0/16" in f["router"].last("set")[0].routes


def test_shields_up(node):
    n, f = node
    allow_all = {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
    n.apply_netmap(netmap(packet_filter=(allow_all,)))
    syn = udp_packet("100.64.0.2", "100.64.0.1", 5000, 7, b"x")
    assert n.filter.explain_in(syn)[0] is not DROP
    n.set_shields_up(True)
    assert n.filter.explain_in(syn) == (DROP, DropReason.NO_RULE)
    n.set_shields_up(False)
    assert n.filter.explain_in(syn)[0] is not DROP


def test_prefs_from_flags(tmp_path):
    args = build_parser().parse_args(["--login-server", "u", "--state", "s", "--exit-node", "100.64.0.3",
                                      "--exit-node-allow-lan-access",
                                      "--advertise-routes", "10.0.0.0/8", "--no-accept-dns", "--accept-routes",
                                      "--shields-up"])
    n = Node(args, NodeState.generate(), tmp_path / "s", logging.getLogger("t"))
    assert n.prefs == NodePrefs(exit_node="100.64.0.3", exit_node_allow_lan=True, advertise_exit_node=False,
                                advertise_routes=("10.0.0.0/8",), accept_dns=False, accept_routes=True,
                                shields_up=True)
    assert NodePrefs().accept_dns and not NodePrefs().accept_routes


@pytest.mark.parametrize("spec,want", [
    ("100.64.0.3", 3), ("fd7a:115c:a1e0::3", 3), ("node3", 3), ("node3.mesh.test.", 3), ("NODE3.mesh.test", 3),
    ("host3", 3), ("n3CNTRL", 3), ("3", 3), (3, 3), ("100.64.0.9", None), ("", None), (None, None),
])
def test_resolve_exit_node(spec, want):
    p = resolve_exit_node(netmap(), spec)
    assert (p.id if p is not None else None) == want


def test_canonical_routes():
    assert canonical_routes(" 10.0.0.1/8,10.0.0.0/8 ,fd00::1/64") == ("10.0.0.0/8", "fd00::/64")
    assert canonical_routes(None) == ()


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
