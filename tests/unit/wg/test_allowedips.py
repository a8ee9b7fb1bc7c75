"""Allowed-IPs longest-prefix match: differential test against a slow reference, and edge cases."""

from __future__ import annotations

import ipaddress
import random

from engine.wg.allowedips import AllowedIPs


class SlowReference:
    def __init__(self) -> None:
        self.entries: dict[ipaddress._BaseNetwork, object] = {}

    def insert(self, net, peer):
        self.entries[net] = peer

    def remove_by_peer(self, peer):
        self.entries = {n: p for n, p in self.entries.items() if p is not peer}

    def lookup(self, ip: bytes):
        addr = ipaddress.ip_address(ip)
        best = None
        for net, peer in self.entries.items():
            if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0].prefixlen):
                best = (net, peer)
        return best[1] if best else None

    def entries_for(self, peer):
        return sorted(
            (n for n, p in self.entries.items() if p is peer), key=lambda n: (n.version, n.network_address, n.prefixlen)
        )


def _rand_net(rnd: random.Random) -> ipaddress._BaseNetwork:
    if rnd.random() < 0.5:
        plen = rnd.choice([0, 8, 16, 24, 32, 32, 32] + list(range(33)))
        return ipaddress.ip_network((rnd.choice([0x0A000000, 0xC0A80000]) | rnd.getrandbits(16), plen), strict=False)
    plen = rnd.choice([0, 48, 64, 128, 128] + list(range(129)))
    base = 0xFD00 << 112
    return ipaddress.ip_network((base | rnd.getrandbits(80), plen), strict=False)


def _rand_ip(rnd: random.Random) -> bytes:
    if rnd.random() < 0.5:
        return (rnd.choice([0x0A000000, 0xC0A80000]) | rnd.getrandbits(16)).to_bytes(4, "big")
    return ((0xFD00 << 112) | rnd.getrandbits(80)).to_bytes(16, "big")


def test_differential_10000_ops():
    rnd = random.Random(1234)
    peers = [object() for _ in range(12)]
    fast, slow = AllowedIPs(), SlowReference()
    for step in range(10000):
        op = rnd.random()
        if op < 0.55:
            net, peer = _rand_net(rnd), rnd.choice(peers)
            fast.insert(net, peer)
            slow.insert(net, peer)
        elif op < 0.60:
            peer = rnd.choice(peers)
            fast.remove_by_peer(peer)
            slow.remove_by_peer(peer)
        else:
            ip = _rand_ip(rnd)
            assert fast.lookup(ip) is slow.lookup(ip), (step, ip.hex())
    for peer in peers:
        assert fast.entries_for(peer) == slow.entries_for(peer)


def test_longest_prefix_and_default_route():
    t = AllowedIPs()
    a, b, c = "a", "b", "c"
    t.insert("0.0.0.0/0", a)
    t.insert("10.0.0.0/8", b)
    t.insert("10.1.2.3/32", c)
    assert t.lookup(bytes([10, 1, 2, 3])) == c
    assert t.lookup(bytes([10, 9, 9, 9])) == b
    assert t.lookup(bytes([8, 8, 8, 8])) == a
    assert t.lookup(bytes(16)) is None
    t.insert("::/0", a)
    assert t.lookup(bytes(16)) == a
    assert t.source_allowed(c, bytes([10, 1, 2, 3])) and not t.source_allowed(b, bytes([10, 1, 2, 3]))


def test_reinsert_moves_prefix_and_non_canonical_input():
    t = AllowedIPs()
    t.insert("10.0.0.7/24", "a")  # host bits are masked
    assert t.entries_for("a") == [ipaddress.ip_network("10.0.0.0/24")]
    t.insert("10.0.0.0/24", "b")
    assert t.entries_for("a") == [] and t.lookup(bytes([10, 0, 0, 1])) == "b"
    assert t.remove("10.0.0.0/24", "a") is False
    assert t.remove("10.0.0.0/24") is True
    assert t.lookup(bytes([10, 0, 0, 1])) is None


def test_lookup_packet_dst():
    t = AllowedIPs()
    t.insert("10.0.0.2/32", "p")
    t.insert("fd00::2/128", "q")
    from .conftest import ip4, ip6

    assert t.lookup_packet_dst(ip4("10.0.0.1", "10.0.0.2")) == "p"
    assert t.lookup_packet_dst(ip6("fd00::1", "fd00::2")) == "q"
    assert t.lookup_packet_dst(b"") is None and t.lookup_packet_dst(b"\x45") is None
