"""Who may use our peerAPI, from the netmap (pure): peer identity by source address and the DNS rule.

Rules (tailscale ipn/ipnlocal/peerapi.go, read for facts):
- a connection whose source address is no peer's tailnet address is closed unanswered;
- a request's Host must be "peer" or "<one of our addresses>:<port>", and it must carry neither
  Referer nor Origin (so a browser page cannot drive it): else 403;
- "/dns-query" is answered for a peer of the same user as us (``is_self``), or, while we offer an
  exit node, for a peer whose packets to "the internet" our packet filter would accept: a TCP SYN
  to 0.0.0.0:53 (IPv4 source) or [2000::]:53 (IPv6 source, autogroup:internet starts at 2000::/3).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

INTERNET_PROBE_V4 = "0.0.0.0"
INTERNET_PROBE_V6 = "2000::"
INTERNET_PROBE_PORT = 53
PROBE_SPORT = 40000  # arbitrary: the filter's rules look at the destination port only
# IPv4: 1b ver/ihl | 1b tos | 2b len | 2b id | 2b frag | 1b ttl | 1b proto | 2b csum | 4b src | 4b dst  (RFC 791)
_IP4 = struct.Struct("!BBHHHBBH4s4s")
# IPv6: 4b ver/tc/flow | 2b payload len | 1b next header | 1b hop limit | 16b src | 16b dst  (RFC 8200)
_IP6 = struct.Struct("!IHBB16s16s")
# TCP: 2b sport | 2b dport | 4b seq | 4b ack | 1b offset | 1b flags | 2b window | 2b csum | 2b urg  (RFC 9293)
_TCP = struct.Struct("!HHIIBBHHH")
SIZE_TCP_HEADER = 20
TCP_SYN = 0x02
PROTO_TCP = 6


def syn_probe(src: str, dst: str, dport: int) -> bytes:
    """A bare TCP SYN src -> dst:dport (checksums zero: only a packet filter ever reads it)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    tcp = _TCP.pack(PROBE_SPORT, dport, 0, 0, 5 << 4, TCP_SYN, 65535, 0, 0)
    if s.version == 4:
        return _IP4.pack(0x45, 0, 20 + SIZE_TCP_HEADER, 0, 0, 64, PROTO_TCP, 0, s.packed, d.packed) + tcp
    return _IP6.pack(6 << 28, SIZE_TCP_HEADER, PROTO_TCP, 64, s.packed, d.packed) + tcp


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The peer behind a tailnet source address."""

    node_id: int
    name: str
    user: int
    tagged: bool = False


@dataclass(frozen=True)
class Access:
    """Our view of the tailnet for peerAPI decisions; rebuilt by the daemon on every netmap.

    ``internet_allowed(src_ip)`` reports whether the packet filter accepts a TCP SYN from
    ``src_ip`` to "the internet" (see module docstring); None = no filter = nothing allowed.
    """

    self_addresses: frozenset[str] = frozenset()
    self_user: int = 0
    peers: Mapping[str, PeerIdentity] = field(default_factory=dict)
    offering_exit: bool = False
    internet_allowed: Callable[[str], bool] | None = None

    def who_is(self, ip: str) -> PeerIdentity | None:
        c = _canon(ip)
        return None if c is None else self.peers.get(c)

    def host_valid(self, host: str | None) -> bool:
        """Host header check: "peer", or ip:port naming one of our addresses."""
        if host is None:
            return False
        if host == "peer":
            return True
        h, sep, port = host.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            return False
        if h.startswith("["):
            if not h.endswith("]"):
                return False
            h = h[1:-1]
        elif ":" in h:
            return False
        c = _canon(h)
        return c is not None and c in self.self_addresses

    def may_query_dns(self, ip: str) -> bool:
        """The DNS rule: same user, or (offering an exit node and the peer may reach the internet)."""
        peer = self.who_is(ip)
        if peer is None:
            return False
        if self.self_user and peer.user == self.self_user:
            return True
        if not self.offering_exit or self.internet_allowed is None:
            return False
        try:
            return bool(self.internet_allowed(_canon(ip) or ip))
        except Exception:  # noqa: BLE001 - a filter error denies
            return False


def _canon(ip: str) -> str | None:
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def filter_internet_check(filt: Any, accept: Any) -> Callable[[str], bool]:
    """``internet_allowed`` from a packet filter with ``explain_in(pkt) -> (verdict, reason)``."""

    def check(src: str) -> bool:
        dst = INTERNET_PROBE_V6 if ":" in src else INTERNET_PROBE_V4
        return filt.explain_in(syn_probe(src, dst, INTERNET_PROBE_PORT))[0] is accept

    return check


def access_from_netmap(nm: Any, *, offering_exit: bool, internet_allowed: Callable[[str], bool] | None) -> Access:
    """Access for NetworkMap ``nm`` (None / no self node: nobody is known)."""
    if nm is None or getattr(nm, "self_node", None) is None:
        return Access()
    me = nm.self_node
    peers: dict[str, PeerIdentity] = {}
    for p in nm.sorted_peers():
        ident = PeerIdentity(node_id=p.id, name=p.name or "", user=p.user or 0, tagged=bool(p.tags))
        for a in p.addresses or ():
            ip = _canon(str(a).split("/", 1)[0])
            if ip is not None:
                peers.setdefault(ip, ident)
    mine = frozenset(c for a in me.addresses or () if (c := _canon(str(a).split("/", 1)[0])) is not None)
    me_ident = PeerIdentity(node_id=me.id, name=me.name or "", user=me.user or 0, tagged=bool(me.tags))
    for ip in mine:  # we may query ourselves (tailscale's WhoIs knows self too)
        peers[ip] = me_ident
    return Access(
        self_addresses=mine,
        self_user=me.user or 0,
        peers=peers,
        offering_exit=offering_exit,
        internet_allowed=internet_allowed,
    )
