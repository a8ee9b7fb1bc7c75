"""MapSession delta application (R10 table tests after tailscale TestUpdatePeersStateFromResponse)."""

import dataclasses

import pytest

from engine.control.mapsession import MapSession, apply_patch
from engine.tailcfg import FilterRule, MapResponse, NetPortRange, Node, PeerChange, PortRange, UserProfile
from engine.types.keys import DiscoPublic, NodePublic

NOW = 1_800_000_000.0
SELF = Node(id=100, name="self.t.", key=NodePublic(b"\x01" * 32), addresses=("100.64.0.1/32",))


def key(i: int) -> NodePublic:
    return NodePublic(bytes([i]) * 32)


def node(id, name=None, *mods):
    n = Node(id=id, name=name or f"n{id}.t.", key=key(id), addresses=(f"100.64.0.{id}/32",))
    for m in mods:
        n = m(n)
    return n


def with_ep(*eps):
    return lambda n: dataclasses.replace(n, endpoints=tuple(eps))


def online(v):
    return lambda n: dataclasses.replace(n, online=v)


def seen(v):
    return lambda n: dataclasses.replace(n, last_seen=v)


def derp(r):
    return lambda n: dataclasses.replace(n, home_derp=r, derp=None)


def run(prev, resp):
    s = MapSession()
    s.apply(MapResponse(node=SELF, peers=tuple(prev) or None), now=NOW)
    return s, s.apply(resp, now=NOW)


@pytest.mark.parametrize(
    "prev,resp,want",
    [
        pytest.param([], MapResponse(peers=(node(1), node(2))), [node(1), node(2)], id="full_peers"),
        pytest.param([node(1), node(2)], MapResponse(peers=(node(2), node(3))), [node(2), node(3)], id="full_replaces"),
        pytest.param([node(1)], MapResponse(peers=(), peers_removed=(1,)), [], id="empty_peers_is_not_full"),
        pytest.param([node(1)], MapResponse(peers=(node(2),), peers_removed=(2,)), [node(2)], id="full_ignores_deltas"),
        pytest.param([node(1), node(2)], MapResponse(peers_removed=(1,)), [node(2)], id="remove"),
        pytest.param([node(1)], MapResponse(peers_removed=(9,)), [node(1)], id="remove_unknown"),
        pytest.param([node(1)], MapResponse(peers_changed=(node(2),)), [node(1), node(2)], id="add"),
        pytest.param([node(1)], MapResponse(peers_changed=(node(1, "renamed."),)), [node(1, "renamed.")], id="change"),
        pytest.param(
            [node(1)], MapResponse(peers_removed=(1,), peers_changed=(node(1),)), [node(1)], id="remove_then_readd"
        ),
        pytest.param([node(1)], MapResponse(online_change={1: True}), [node(1, None, online(True))], id="online"),
        pytest.param(
            [node(1, None, online(True))],
            MapResponse(online_change={1: False}),
            [node(1, None, online(False))],
            id="offline",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peer_seen_change={1: True}),
            [node(1, None, seen("2027-01-15T08:00:00Z"))],
            id="seen_now",
        ),
        pytest.param(
            [node(1, None, seen("2020-01-01T00:00:00Z"))],
            MapResponse(peer_seen_change={1: False}),
            [node(1)],
            id="seen_cleared",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed_patch=(PeerChange(node_id=1, endpoints=("192.0.2.9:1",)),)),
            [node(1, None, with_ep("192.0.2.9:1"))],
            id="patch_endpoints",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed_patch=(PeerChange(node_id=1, derp_region=5),)),
            [node(1, None, derp(5))],
            id="patch_derp",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed_patch=(PeerChange(node_id=1, online=True),)),
            [node(1, None, online(True))],
            id="patch_online",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed_patch=(PeerChange(node_id=1, key=key(77)),)),
            [dataclasses.replace(node(1), key=key(77))],
            id="patch_key",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed_patch=(PeerChange(node_id=2, online=True),)),
            [node(1)],
            id="patch_unknown_dropped",
        ),
        pytest.param(
            [node(1)],
            MapResponse(peers_changed=(node(2),), peers_changed_patch=(PeerChange(node_id=2, derp_region=3),)),
            [node(1), node(2, None, derp(3))],
            id="patch_after_changed",
        ),
    ],
)
def test_apply_map_response(prev, resp, want):
    s, nm = run(prev, resp)
    assert nm.sorted_peers() == want


def test_first_map_needs_self_node():
    s = MapSession()
    assert s.apply(MapResponse(peers=(node(1),)), now=NOW) is None
    nm = s.apply(MapResponse(node=SELF), now=NOW)
    assert nm is not None and list(nm.peers) == [1] and nm.delta.full


def test_keepalive_produces_nothing():
    s, _ = run([node(1)], MapResponse(keep_alive=True))
    assert s.apply(MapResponse(keep_alive=True, control_time="2027-01-01T00:00:00Z"), now=NOW) is None


def test_delta_reports_changed_and_removed_ids():
    s, nm = run([node(1), node(2)], MapResponse(peers_removed=(1,), peers_changed=(node(3),), online_change={2: True}))
    assert nm.delta.changed == {2, 3} and nm.delta.removed == {1} and not nm.delta.full


def test_idempotent():
    resp = MapResponse(
        peers_changed=(node(3),),
        peers_changed_patch=(PeerChange(node_id=3, endpoints=("a:1",)),),
        online_change={3: True},
    )
    s, nm1 = run([node(1)], resp)
    first = nm1.snapshot()
    nm2 = s.apply(resp, now=NOW)
    assert dict(nm2.peers) == dict(first.peers)
    assert nm2.delta.changed == {3}  # PeersChanged resets the node, then the same patches re-apply
    nm3 = s.apply(MapResponse(online_change={3: True}), now=NOW)
    assert nm3.delta.is_empty()


ALLOW = (FilterRule(src_ips=("*",), dst_ports=(NetPortRange(ip="*", ports=PortRange(0, 65535)),)),)
R1 = (FilterRule(src_ips=("100.64.0.1",)),)
R2 = (FilterRule(src_ips=("100.64.0.2",)),)


@pytest.mark.parametrize(
    "msgs,want",
    [
        pytest.param([], None, id="none_yet"),
        pytest.param([MapResponse(packet_filter=ALLOW)], ALLOW, id="legacy_base"),
        pytest.param([MapResponse(packet_filter=())], (), id="empty_blocks_all"),
        pytest.param([MapResponse(packet_filter=ALLOW), MapResponse(peers_removed=(5,))], ALLOW, id="nil_unchanged"),
        pytest.param([MapResponse(packet_filters={"base": ALLOW})], ALLOW, id="headscale_base"),
        pytest.param([MapResponse(packet_filters={"b": R2, "a": R1})], R1 + R2, id="sorted_concat"),
        pytest.param(
            [MapResponse(packet_filters={"a": R1, "b": R2}), MapResponse(packet_filters={"a": None})],
            R2,
            id="nil_value_deletes",
        ),
        pytest.param(
            [MapResponse(packet_filters={"a": R1, "b": R2}), MapResponse(packet_filters={"*": None, "c": R1})],
            R1,
            id="star_clears_first",
        ),
        pytest.param(
            [MapResponse(packet_filter=R2), MapResponse(packet_filters={"a": R1})], R1 + R2, id="base_is_a_chunk"
        ),
    ],
)
def test_packet_filter(msgs, want):
    s = MapSession()
    nm = s.apply(MapResponse(node=SELF), now=NOW)
    for m in msgs:
        nm = s.apply(m, now=NOW)
    assert nm.packet_filter == want


def test_unchanged_fields_and_profiles():
    from engine.tailcfg import DERPMap, DNSConfig

    s = MapSession()
    dm = DERPMap(regions={})
    s.apply(
        MapResponse(
            node=SELF,
            derp_map=dm,
            dns_config=DNSConfig(domains=("t",)),
            domain="tn",
            user_profiles=(UserProfile(id=1, login_name="a"),),
        ),
        now=NOW,
    )
    nm = s.apply(MapResponse(user_profiles=(UserProfile(id=2, login_name="b"),), domain=""), now=NOW)
    assert nm.derp_map is dm and nm.dns_config.domains == ("t",) and nm.domain == "tn"
    assert set(nm.user_profiles) == {1, 2}


def test_self_key_expiry():
    s = MapSession()
    nm = s.apply(MapResponse(node=dataclasses.replace(SELF, key_expiry="2020-01-01T00:00:00Z")), now=NOW)
    assert nm.self_key_expired(NOW)
    nm = s.apply(MapResponse(node=dataclasses.replace(SELF, key_expiry="0001-01-01T00:00:00Z")), now=NOW)
    assert not nm.self_key_expired(NOW)
    nm = s.apply(MapResponse(node=dataclasses.replace(SELF, expired=True)), now=NOW)
    assert nm.self_key_expired(NOW)


def test_apply_patch_zero_fields_unchanged():
    n = node(1, None, derp(4))
    assert apply_patch(n, PeerChange(node_id=1, derp_region=0, cap=0)) is n
    assert apply_patch(n, PeerChange(node_id=1, disco_key=DiscoPublic(b"\x02" * 32))).disco_key == DiscoPublic(
        b"\x02" * 32
    )
