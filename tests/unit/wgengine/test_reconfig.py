"""NetworkMap -> WgConfig/RouterConfig, and diffs (NO_CHANGES when equal)."""

from engine.control.mapsession import MapSession
from engine.tailcfg import MapResponse, Node, PeerChange
from engine.types.keys import NodePublic
from engine.wgengine.reconfig import (
    NO_CHANGES,
    ReconfigOptions,
    RouterConfig,
    WgConfig,
    diff_wg,
    pick_endpoint,
    router_config,
    wg_config,
)

NOW = 1_800_000_000.0
SELF = Node(
    id=100,
    name="self.t.",
    key=NodePublic(b"\x01" * 32),
    addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128", "192.0.2.7/32"),
)


def node(i, **kw):
    base = dict(
        id=i,
        key=NodePublic(bytes([i]) * 32),
        addresses=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"),
        endpoints=(f"192.0.2.{i}:41641",),
    )
    base.update(kw)
    return Node(**base)


def session(*peers):
    s = MapSession()
    return s, s.apply(MapResponse(node=SELF, peers=tuple(peers)), now=NOW)


def test_wg_config_basic():
    _, nm = session(node(2), node(3, allowed_ips=("100.64.0.3/32", "10.0.0.0/24", "0.0.0.0/0", "::/0")))
    cfg = wg_config(nm)
    p2 = cfg.peers[NodePublic(b"\x02" * 32)]
    assert p2.allowed_ips == ("100.64.0.2/32", "fd7a:115c:a1e0::2/128")
    assert p2.endpoint == "192.0.2.2:41641"
    p3 = cfg.peers[NodePublic(b"\x03" * 32)]
    assert p3.allowed_ips == ("100.64.0.3/32",)  # no subnet routes, no exit routes by default
    cfg2 = wg_config(nm, ReconfigOptions(exit_node_id=3, accept_routes=True))
    assert cfg2.peers[NodePublic(b"\x03" * 32)].allowed_ips == ("0.0.0.0/0", "10.0.0.0/24", "100.64.0.3/32", "::/0")


def test_expired_and_keyless_peers_skipped():
    _, nm = session(node(2, expired=True), node(3, key=NodePublic.zero()), node(4))
    assert [p.node_id for p in wg_config(nm).peers.values()] == [4]


def test_router_config():
    _, nm = session(node(2), node(3))
    rc = router_config(nm)
    assert rc.local_addrs == ("100.64.0.1/32", "fd7a:115c:a1e0::1/128")  # 192.0.2.7 is not a Tailscale range
    assert rc.routes == ("100.64.0.2/32", "100.64.0.3/32", "fd7a:115c:a1e0::2/128", "fd7a:115c:a1e0::3/128")
    assert router_config(None) == RouterConfig() and RouterConfig().is_empty()


def test_diff_no_changes_and_incremental():
    s, nm = session(node(2), node(3))
    c1 = wg_config(nm)
    assert diff_wg(c1, wg_config(nm)) is NO_CHANGES
    d = diff_wg(None, c1)
    assert [p.node_id for p in d.upsert] == [2, 3] and d.remove == ()
    nm2 = s.apply(
        MapResponse(
            peers_changed_patch=(PeerChange(node_id=2, endpoints=("192.0.2.99:5",)),),
            peers_removed=(3,),
            peers_changed=(node(4),),
        ),
        now=NOW,
    )
    c2 = wg_config(nm2, prev=c1)
    assert c2 == wg_config(nm2)  # incremental equals full recompute
    d = diff_wg(c1, c2, hint=nm2.delta)
    assert [p.node_id for p in d.upsert] == [2, 4]
    assert d.remove == (NodePublic(b"\x03" * 32),)
    assert diff_wg(c1, c2) == d
    nm3 = s.apply(MapResponse(online_change={4: True}), now=NOW)
    c3 = wg_config(nm3, prev=c2)
    assert diff_wg(c2, c3, hint=nm3.delta) is NO_CHANGES  # online flag does not touch WireGuard


def test_key_change_is_remove_plus_add():
    s, nm = session(node(2))
    c1 = wg_config(nm)
    nm2 = s.apply(MapResponse(peers_changed_patch=(PeerChange(node_id=2, key=NodePublic(b"\x09" * 32)),)), now=NOW)
    d = diff_wg(c1, wg_config(nm2, prev=c1), hint=nm2.delta)
    assert d.remove == (NodePublic(b"\x02" * 32),) and d.upsert[0].public_key == NodePublic(b"\x09" * 32)


def test_empty_config_removes_everything():
    _, nm = session(node(2))
    d = diff_wg(wg_config(nm), WgConfig())
    assert d.upsert == () and len(d.remove) == 1


def test_pick_endpoint():
    assert pick_endpoint(("127.0.0.1:1", "[fe80::1]:2", "[2001:db8::1]:3", "192.0.2.1:4")) == "192.0.2.1:4"
    assert pick_endpoint(("[2001:db8::1]:3", "192.0.2.1:4"), prefer_v6=True) == "[2001:db8::1]:3"
    assert pick_endpoint(("bogus", "127.0.0.1:5")) is None
    assert pick_endpoint(None) is None
