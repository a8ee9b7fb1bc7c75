"""Cryptokey routing table (whitepaper §2): longest-prefix match of IPv4/IPv6 addresses to peers.

One dict per prefix length, keyed by the address shifted right to that length; a lookup
tries the lengths in use from longest to shortest, so its cost is a few dict probes
(≈ number of distinct prefix lengths), independent of the number of entries.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_from_bytes = int.from_bytes


class _Family:
    __slots__ = ("bits", "tables", "chain")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, Any]] = {}  # prefix length -> {masked >> shift: peer}
        self.chain: tuple[tuple[int, dict[int, Any]], ...] = ()  # (shift, table), longest first

    def rebuild(self) -> None:
        for plen in [p for p, t in self.tables.items() if not t]:
            del self.tables[plen]
        self.chain = tuple((self.bits - p, self.tables[p]) for p in sorted(self.tables, reverse=True))

    def lookup(self, x: int) -> Any:
        for shift, table in self.chain:
            p = table.get(x >> shift)
            if p is not None:
                return p
        return None


def _net(prefix: object) -> IPNetwork:
    if isinstance(prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return prefix
    return ipaddress.ip_network(str(prefix), strict=False)


class AllowedIPs:
    """Longest-prefix-match table from IP prefixes to peers (any hashable, non-None objects).

    Inserting a prefix that is already present moves it to the new peer (as in WireGuard).
    Mutations are not thread-safe against each other; lookups run concurrently with them
    (each probe is one dict ``get``; the chain tuple is swapped atomically).
    """

    def __init__(self) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        self._by_peer: dict[Any, set[IPNetwork]] = {}

    def insert(self, prefix: object, peer: Any) -> None:
        if peer is None:
            raise ValueError("peer must not be None")
        net = _net(prefix)
        fam = self._v4 if net.version == 4 else self._v6
        plen = net.prefixlen
        key = int(net.network_address) >> (fam.bits - plen)
        table = fam.tables.get(plen)
        new_len = table is None
        if table is None:
            table = fam.tables[plen] = {}
        old = table.get(key)
        if old is not None and old is not peer:
            self._by_peer[old].discard(net)
            if not self._by_peer[old]:
                del self._by_peer[old]
        table[key] = peer
        self._by_peer.setdefault(peer, set()).add(net)
        if new_len:
            fam.rebuild()

    def remove(self, prefix: object, peer: Any = None) -> bool:
        """Remove one prefix (only if it maps to ``peer``, when given). True if removed."""
        net = _net(prefix)
        fam = self._v4 if net.version == 4 else self._v6
        table = fam.tables.get(net.prefixlen)
        if table is None:
            return False
        key = int(net.network_address) >> (fam.bits - net.prefixlen)
        old = table.get(key)
        if old is None or (peer is not None and old is not peer):
            return False
        del table[key]
        nets = self._by_peer.get(old)
        if nets is not None:
            nets.discard(net)
            if not nets:
                del self._by_peer[old]
        if not table:
            fam.rebuild()
        return True

    def remove_by_peer(self, peer: Any) -> None:
        nets = self._by_peer.pop(peer, None)
        if not nets:
            return
        for net in nets:
            fam = self._v4 if net.version == 4 else self._v6
            table = fam.tables.get(net.prefixlen)
            if table is not None:
                table.pop(int(net.network_address) >> (fam.bits - net.prefixlen), None)
        self._v4.rebuild()
        self._v6.rebuild()

    def clear(self) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        self._by_peer = {}

    def entries_for(self, peer: Any) -> list[IPNetwork]:
        """The peer's prefixes, IPv4 first, then by address and length."""
        return sorted(self._by_peer.get(peer, ()), key=lambda n: (n.version, n.network_address, n.prefixlen))

    def peers(self) -> Iterable[Any]:
        return list(self._by_peer)

    # --- hot path ---------------------------------------------------------------------------
    def lookup(self, ip: bytes) -> Any:
        """The peer for a 4- or 16-byte address (longest match), or None."""
        if len(ip) == 4:
            return self._v4.lookup(_from_bytes(ip, "big"))
        if len(ip) == 16:
            return self._v6.lookup(_from_bytes(ip, "big"))
        return None

    def lookup_v4(self, ip: int) -> Any:
        return self._v4.lookup(ip)

    def lookup_v6(self, ip: int) -> Any:
        return self._v6.lookup(ip)

    def lookup_packet_dst(self, packet: bytes) -> Any:
        """The peer for an IP packet's destination address (cryptokey routing of TUN output)."""
        if not packet:
            return None
        v = packet[0] >> 4
        if v == 4 and len(packet) >= 20:
            return self._v4.lookup(_from_bytes(packet[16:20], "big"))
        if v == 6 and len(packet) >= 40:
            return self._v6.lookup(_from_bytes(packet[24:40], "big"))
        return None

    def source_allowed(self, peer: Any, src_ip: bytes) -> bool:
        """Whether a packet from ``peer`` may carry source ``src_ip`` (inbound check)."""
        return self.lookup(src_ip) is peer
