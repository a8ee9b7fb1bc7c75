"""Stateful packet filter with tailscale's semantics: check_in/check_out per IP packet (sans-IO).

Flow (mirrors tailscale wgengine/filter, read for facts):

    pre (both directions):  len 0 -> ACCEPT (WireGuard keepalive)
                            len < 20 -> DROP too-short;  unparseable -> DROP unknown-proto
                            multicast dst / link-local dst (but 169.254.169.254) -> DROP
                            non-first IPv4 fragment -> ACCEPT
    out:  ACCEPT; UDP/SCTP records the reversed 5-tuple in a 512-entry LRU
    in:   dst must be local (own addresses + advertised routes), else DROP
          ICMP: echo reply / errors ACCEPT; else a rule matching the IPs (ports, proto ignored)
          TCP: non-SYN ACCEPT; SYN needs a rule (proto, src, dst, port)
          UDP/SCTP: LRU hit ACCEPT, else a rule
          TSMP (99): ACCEPT
          other: a rule for that proto whose DstPorts span all ports
"""

from __future__ import annotations

import enum
import ipaddress
import threading
from bisect import bisect_right
from collections import OrderedDict
from typing import Any, Final, Iterable, Literal, Mapping, Sequence, Union

from engine.filter.packet import (
    PROTO_FRAGMENT,
    PROTO_ICMP4,
    PROTO_ICMP6,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_TSMP,
    PROTO_UDP,
    PROTO_UNKNOWN,
    TCP_ACK,
    TCP_SYN,
    Packet,
    decode,
)
from engine.filter.rules import DstRange, FilterRuleError, Match, Range, compile_rules, prefixes_to_ranges

LRU_SIZE = 512  # tailscale's flowtrack cache size for UDP/SCTP reply tuples

_GCP_METADATA = 0xA9FEA9FE  # 169.254.169.254 is the one link-local dst allowed
_LL4_LO, _LL4_HI = 0xA9FE0000, 0xA9FEFFFF  # 169.254.0.0/16
_MC4_LO, _MC4_HI = 0xE0000000, 0xEFFFFFFF  # 224.0.0.0/4
_MC6_PREFIX = 0xFF  # ff00::/8 (top byte)
_LL6_TOP10 = 0x3FA  # fe80::/10 (top 10 bits)

# ICMP types (RFC 792 / RFC 4443)
_ICMP4_ECHO_REPLY, _ICMP4_UNREACH, _ICMP4_TIME_EXCEEDED, _ICMP4_PARAM = 0, 3, 11, 12
_ICMP6_UNREACH, _ICMP6_TOO_BIG, _ICMP6_TIME_EXCEEDED, _ICMP6_PARAM, _ICMP6_ECHO_REPLY = 1, 2, 3, 4, 129
_ICMP4_OK = frozenset({_ICMP4_UNREACH, _ICMP4_TIME_EXCEEDED, _ICMP4_PARAM})
_ICMP6_OK = frozenset({_ICMP6_UNREACH, _ICMP6_TOO_BIG, _ICMP6_TIME_EXCEEDED, _ICMP6_PARAM})


class Verdict(enum.Enum):
    """What to do with a packet."""

    ACCEPT = "accept"
    DROP = "drop"


ACCEPT: Final = Verdict.ACCEPT
DROP: Final = Verdict.DROP


class DropReason(str, enum.Enum):
    """Why a packet was dropped (the keys of Filter.drops)."""

    TOO_SHORT = "too-short"
    UNKNOWN_PROTO = "unknown-proto"
    MULTICAST = "multicast"
    LINK_LOCAL = "link-local-unicast"
    DST_NOT_LOCAL = "destination-not-allowed"
    NO_RULE = "no-rules-matched"
    OTHER_PROTO = "unknown-protocol-no-rule"


# decode(): (version, proto, src, dst, sport, dport, tcp_flags, icmp_type, icmp_code)
_Decoded = tuple[int, int, int, int, int, int, int, int, int]
# explain_in(): a DROP always names a DropReason, an ACCEPT says why in plain text.
Explanation = Union[tuple[Literal[Verdict.DROP], DropReason], tuple[Literal[Verdict.ACCEPT], str]]
# _pre(): a verdict with its reason, or (None, None, the decoded packet) for the direction's own checks.
_Pre = Union[
    tuple[Literal[Verdict.DROP], DropReason, None],
    tuple[Literal[Verdict.ACCEPT], str, None],
    tuple[None, None, _Decoded],
]
# Per-family compiled rules: (protos, srcs, dsts) triples.
_Matches = tuple[tuple[frozenset[int], tuple[Range, ...], tuple[DstRange, ...]], ...]


def _in_ranges(x: int, ranges: tuple[Range, ...]) -> bool:
    for lo, hi in ranges:
        if lo <= x <= hi:
            return True
    return False


def _in_sorted(x: int, lows: tuple[int, ...], highs: tuple[int, ...]) -> bool:
    """x in one of the sorted, disjoint ranges (lows[i], highs[i]): a bisect, whatever their number."""
    i = bisect_right(lows, x) - 1
    return i >= 0 and x <= highs[i]


class Filter:
    """A compiled filter plus the UDP reply LRU. Thread-safe: check_* may run in data-plane threads."""

    def __init__(
        self,
        matches: Sequence[Match] = (),
        local_nets: Iterable[str] = (),
        *,
        lru_size: int = LRU_SIZE,
        open_tcp: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.matches = tuple(matches)
        # (address, port) pairs a TCP SYN may always reach, whatever the rules: our peerAPI listeners
        # (tailscale lets them through before its filter: their access rules are applied at L7)
        self._open_tcp = frozenset(
            (ipaddress.ip_address(a).version, int(ipaddress.ip_address(a)), int(p)) for a, p in open_tcp
        )
        self._local4, self._local6 = prefixes_to_ranges(local_nets)  # sorted and merged (disjoint)
        self._lo4, self._hi4 = tuple(r[0] for r in self._local4), tuple(r[1] for r in self._local4)
        self._lo6, self._hi6 = tuple(r[0] for r in self._local6), tuple(r[1] for r in self._local6)
        # Per-family (protos, srcs, dsts) triples: the inner loops index tuples only.
        self._m4: _Matches = tuple((m.protos, m.src4, m.dst4) for m in self.matches if m.src4 and m.dst4)
        self._m6: _Matches = tuple((m.protos, m.src6, m.dst6) for m in self.matches if m.src6 and m.dst6)
        self._lru: OrderedDict[tuple[int, int, int, int, int], None] = OrderedDict()
        self._lru_size = lru_size
        self._lock = threading.Lock()
        self.drops: dict[DropReason, int] = {r: 0 for r in DropReason}
        self.accepted_in = 0

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def allow_none(cls) -> "Filter":
        """The filter before any netmap: nothing inbound is local, so every inbound packet drops."""
        return cls()

    @classmethod
    def from_rules(
        cls, rules: Sequence[Mapping[str, Any]], local_nets: Iterable[str], **kw: Any
    ) -> tuple["Filter", list[str]]:
        """Compile FilterRule JSON dicts; returns (filter, non-fatal errors). SrcBits raises."""
        matches, errors = compile_rules(rules)
        return cls(matches, local_nets, **kw), errors

    @classmethod
    def for_netmap(
        cls,
        packet_filter: Sequence[Any] | None,
        self_addresses: Iterable[str],
        advertised_routes: Iterable[str] = (),
        prev: "Filter | None" = None,
        open_tcp: Iterable[tuple[str, int]] = (),
    ) -> tuple["Filter", list[str]]:
        """The daemon's entry point: NetworkMap.packet_filter (None = none yet -> AllowNone).

        Local destinations are our own addresses plus the routes we advertise (0.0.0.0/0 and
        ::/0 when offering an exit node). A fatal rule error (SrcBits) fails closed (AllowNone).
        The UDP reply LRU of `prev` is carried over. ``open_tcp``: see __init__ (not before the first netmap).
        """
        errors: list[str]
        if packet_filter is None:
            f, errors = cls.allow_none(), []
        else:
            try:
                f, errors = cls.from_rules(packet_filter, [*self_addresses, *advertised_routes], open_tcp=open_tcp)
            except FilterRuleError as e:
                f, errors = cls.allow_none(), [str(e)]
        if prev is not None:
            f.carry_state_from(prev)
        return f, errors

    def carry_state_from(self, old: "Filter") -> None:
        """Keep the UDP reply LRU across a reconfiguration (as tailscale does)."""
        with old._lock:
            items = list(old._lru)
        with self._lock:
            for t in items[-self._lru_size :]:
                self._lru[t] = None

    # -- hot path -------------------------------------------------------------------------
    def check_out(self, pkt: Packet) -> Verdict:
        """Packet from this host into the tunnel: accepted unless `pre` drops it; records UDP flows."""
        pre = self._pre(pkt)
        if pre[0] is not None:
            if pre[0] is DROP:
                self.drops[pre[1]] += 1
            return pre[0]
        d = pre[2]
        proto = d[1]
        if proto == PROTO_UDP or proto == PROTO_SCTP:
            # Reversed tuple: what a reply will look like.
            t = (proto, d[3], d[5], d[2], d[4])
            with self._lock:
                lru = self._lru
                if t in lru:
                    lru.move_to_end(t)
                else:
                    lru[t] = None
                    if len(lru) > self._lru_size:
                        lru.popitem(last=False)
        return ACCEPT

    def check_in(self, pkt: Packet) -> Verdict:
        """Packet from a peer, decrypted, about to be written to the TUN."""
        e = self.explain_in(pkt)
        if e[0] is DROP:
            self.drops[e[1]] += 1
        else:
            self.accepted_in += 1
        return e[0]

    def explain_in(self, pkt: Packet) -> Explanation:
        """check_in without counting; returns (verdict, reason) for tests and debugging."""
        pre = self._pre(pkt)
        if pre[0] is DROP:
            return DROP, pre[1]
        if pre[0] is ACCEPT:
            return ACCEPT, pre[1]
        d = pre[2]
        ver, proto, src, dst, _sport, dport, flags, itype, icode = d
        if ver == 4:
            if not _in_sorted(dst, self._lo4, self._hi4):
                return DROP, DropReason.DST_NOT_LOCAL
            ms = self._m4
        else:
            if not _in_sorted(dst, self._lo6, self._hi6):
                return DROP, DropReason.DST_NOT_LOCAL
            ms = self._m6
        if proto == PROTO_TCP:
            if (flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
                return ACCEPT, "tcp non-syn"
            if self._match(ms, proto, src, dst, dport):
                return ACCEPT, "tcp ok"
            if self._open_tcp and (ver, dst, dport) in self._open_tcp:
                return ACCEPT, "peerapi"
            return DROP, DropReason.NO_RULE
        if proto == PROTO_UDP or proto == PROTO_SCTP:
            t = (proto, src, d[4], dst, dport)
            with self._lock:
                if t in self._lru:
                    self._lru.move_to_end(t)
                    return ACCEPT, "cached"
            if self._match(ms, proto, src, dst, dport):
                return ACCEPT, "ok"
            return DROP, DropReason.NO_RULE
        if proto == PROTO_ICMP4 or proto == PROTO_ICMP6:
            if icode == 0 and itype == (_ICMP4_ECHO_REPLY if proto == PROTO_ICMP4 else _ICMP6_ECHO_REPLY):
                return ACCEPT, "icmp response ok"
            if itype in (_ICMP4_OK if proto == PROTO_ICMP4 else _ICMP6_OK):
                return ACCEPT, "icmp error ok"
            # Echo requests (and any other ICMP): ok if any rule opens anything to this dst
            # from this src; protocol and ports are not considered (tailscale matchIPsOnly).
            for _protos, srcs, dsts in ms:
                if _in_ranges(src, srcs):
                    for dr in dsts:
                        if dr.lo <= dst <= dr.hi:
                            return ACCEPT, "icmp ok"
            return DROP, DropReason.NO_RULE
        if proto == PROTO_TSMP:
            return ACCEPT, "tsmp ok"
        # Other protocols: need a rule naming the protocol with all ports open.
        for protos, srcs, dsts in ms:
            if proto in protos and _in_ranges(src, srcs):
                for dr in dsts:
                    if dr.first == 0 and dr.last == 65535 and dr.lo <= dst <= dr.hi:
                        return ACCEPT, "other-portless ok"
        return DROP, DropReason.OTHER_PROTO

    # -- internals ------------------------------------------------------------------------
    @staticmethod
    def _match(ms: _Matches, proto: int, src: int, dst: int, dport: int) -> bool:
        for protos, srcs, dsts in ms:
            if proto not in protos:
                continue
            for lo, hi in srcs:
                if lo <= src <= hi:
                    break
            else:
                continue
            for dr in dsts:
                if dr.lo <= dst <= dr.hi and dr.first <= dport <= dr.last:
                    return True
        return False

    @staticmethod
    def _pre(pkt: Packet) -> _Pre:
        n = len(pkt)
        if n == 0:
            return ACCEPT, "keepalive", None
        if n < 20:
            return DROP, DropReason.TOO_SHORT, None
        d = decode(pkt)
        ver, proto, _src, dst = d[0], d[1], d[2], d[3]
        if proto == PROTO_UNKNOWN or ver == 0:
            return DROP, DropReason.UNKNOWN_PROTO, None
        if ver == 4:
            if _MC4_LO <= dst <= _MC4_HI:
                return DROP, DropReason.MULTICAST, None
            if _LL4_LO <= dst <= _LL4_HI and dst != _GCP_METADATA:
                return DROP, DropReason.LINK_LOCAL, None
        else:
            if dst >> 120 == _MC6_PREFIX:
                return DROP, DropReason.MULTICAST, None
            if dst >> 118 == _LL6_TOP10:
                return DROP, DropReason.LINK_LOCAL, None
        if proto == PROTO_FRAGMENT:
            return ACCEPT, "fragment", None
        return None, None, d
