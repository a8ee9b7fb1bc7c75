"""The one exit-node resolver over the three shapes a node has: tailcfg.Node, PeerView, ipnstate PeerStatus."""

from __future__ import annotations

import pytest

from engine.ipn.backend import exit_node_of
from engine.ipn.exitnode import ident_of_node, ident_of_status, ident_of_view, resolve_exit_node
from engine.ipn.netmapview import netmap_view
from engine.localapi.schema import PeerStatus, Prefs
from tests.unit.wgengine.fakes import NOW, peer, session_netmap


def nodes():
    _, nm = session_netmap()
    return nm


CASES = [
    ("100.64.0.3", 3),
    ("fd7a:115c:a1e0::3", 3),
    ("fd7a:115c:a1e0:0::3", 3),
    ("node3", 3),
    ("node3.mesh.test.", 3),
    ("NODE3.mesh.test", 3),
    ("host3", 3),
    ("n3CNTRL", 3),
    ("n3cntrl", 3),
    ("3", 3),
    (3, 3),
    ("100.64.0.9", None),
    ("", None),
    (None, None),
    ("node9", None),
]


@pytest.mark.parametrize("spec,want", CASES)
def test_resolve_over_netmap_nodes(spec, want):
    p = resolve_exit_node(spec, nodes().sorted_peers(), ident_of_node)
    assert (p.id if p is not None else None) == want


@pytest.mark.parametrize("spec,want", CASES)
def test_resolve_over_peer_views(spec, want):
    view = netmap_view(nodes(), {}, NOW)
    p = resolve_exit_node(spec, view.peers, ident_of_view)
    assert (p.node_id if p is not None else None) == want


@pytest.mark.parametrize("spec,want", [c for c in CASES if c[0] not in ("3", 3)])  # ipnstate has no numeric ID
def test_resolve_over_status_peers(spec, want):
    peers = [
        PeerStatus(
            id=f"n{i}CNTRL",
            dns_name=f"node{i}.mesh.test.",
            host_name=f"host{i}",
            tailscale_ips=[f"100.64.0.{i}", f"fd7a:115c:a1e0::{i}"],
        )
        for i in (2, 3)
    ]
    p = resolve_exit_node(spec, peers, ident_of_status)
    assert (p.id if p is not None else None) == (f"n{want}CNTRL" if want else None)


def test_ids_win_over_names_and_ip_only_matches_addresses():
    _, nm = session_netmap(peer(2, name="n3cntrl.mesh.test."), peer(3))
    assert resolve_exit_node("n3CNTRL", nm.sorted_peers(), ident_of_node).id == 3
    assert resolve_exit_node("100.64.0.2", nm.sorted_peers(), ident_of_node).id == 2


def test_backend_uses_the_same_resolver():
    view = netmap_view(nodes(), {}, NOW)
    assert exit_node_of(Prefs(exit_node_id="n3CNTRL"), view).node_id == 3
    assert exit_node_of(Prefs(exit_node_ip="100.64.0.3"), view).node_id == 3
    assert exit_node_of(Prefs(exit_node_ip="100.64.0.9"), view) is None
    assert exit_node_of(Prefs(), view) is None and exit_node_of(Prefs(exit_node_id="x"), None) is None
