"""Minimal, allocation-light IPv4/IPv6 header parser for the packet filter (sans-IO, hot path)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

# IP protocol numbers (IANA).
PROTO_ICMP4 = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
PROTO_TSMP = 99  # Tailscale Message Protocol, inside the tunnel only
PROTO_SCTP = 132
# Internal markers, never real protocol numbers on the wire we accept:
PROTO_UNKNOWN = 0  # could not be parsed safely -> always dropped
PROTO_FRAGMENT = 0xFF  # non-first IPv4 fragment -> passed through (no L4 header)

# Sizes of the headers we read (bytes).
SIZE_IP4_HEADER = 20
SIZE_IP6_HEADER = 40
SIZE_ICMP_HEADER = 4
SIZE_TCP_HEADER = 20
SIZE_UDP_HEADER = 8
SIZE_SCTP_HEADER = 12
# RFC 1858 (overlapping-fragment attacks): a first fragment must carry at least this many
# bytes of L4 header, and later fragments must not start inside it. Tailscale compares both
# against (60 + 20) / 8 = 10; we use the same number so verdicts agree.
MIN_FRAG = 10

TCP_SYN = 0x02
TCP_ACK = 0x10

# An IP packet as the data plane hands it over.
Packet = Union[bytes, bytearray, memoryview]

# IPv4: 1b ver/ihl | 1b tos | 2b total len | 2b id | 2b flags/frag | 1b ttl | 1b proto | 2b csum | 4b src | 4b dst
_IP4 = struct.Struct("!BxHxxHxBxxII")
# IPv6: 4b ver/tc/flow | 2b payload len | 1b next header | 1b hop limit | 16b src | 16b dst
_IP6 = struct.Struct("!4xHB")
_PORTS = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class Parsed:
    """The fields the filter needs: version (0 = not IP), proto, addresses as ints, ports, flags."""

    version: int
    proto: int
    src: int
    dst: int
    sport: int
    dport: int
    tcp_flags: int
    icmp_type: int  # -1 when not ICMP or too short for a type/code
    icmp_code: int


NOT_IP = Parsed(0, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)


def parse(b: Packet) -> Parsed:
    """Decode the IP header of `b`; never raises (junk comes back as version 0 / PROTO_UNKNOWN)."""
    return Parsed(*decode(b))


def decode(b: Packet) -> tuple[int, int, int, int, int, int, int, int, int]:
    """Tuple form of `parse`: (version, proto, src, dst, sport, dport, tcp_flags, icmp_type, icmp_code)."""
    n = len(b)
    if n < 1:
        return (0, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)
    ver = b[0] >> 4
    if ver == 4:
        if n < SIZE_IP4_HEADER:
            return (0, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)
        vihl, length, frag, proto, src, dst = _IP4.unpack_from(b, 0)
        if n < length:
            # Truncated: the IP header claims more than we got.
            return (4, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)
        subofs = (vihl & 0x0F) << 2
        if subofs > length or subofs < SIZE_IP4_HEADER:
            return (4, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
        sublen = n - subofs
        frag_ofs = frag & 0x1FFF
        if frag_ofs:
            if frag_ofs < MIN_FRAG:
                return (4, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
            return (4, PROTO_FRAGMENT, src, dst, 0, 0, 0, -1, -1)
        if (frag & 0x2000) and sublen < MIN_FRAG:
            return (4, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
        if proto == PROTO_ICMP4:
            if sublen < SIZE_ICMP_HEADER:
                return (4, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
            if sublen < 8:
                return (4, proto, src, dst, 0, 0, 0, -1, -1)
            return (4, proto, src, dst, 0, 0, 0, b[subofs], b[subofs + 1])
    elif ver == 6:
        if n < SIZE_IP6_HEADER:
            return (0, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)
        plen, proto = _IP6.unpack_from(b, 0)
        if n < plen + SIZE_IP6_HEADER:
            return (6, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)
        mb = bytes(b[8:40])
        src = int.from_bytes(mb[:16], "big")
        dst = int.from_bytes(mb[16:], "big")
        # No extension headers are followed (as in tailscale): L4 starts at byte 40, and
        # anything we don't know is passed to the rules as its own protocol number.
        subofs = SIZE_IP6_HEADER
        sublen = n - subofs
        if proto == PROTO_ICMP6:
            if sublen < SIZE_ICMP_HEADER:
                return (6, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
            if sublen < 8:
                return (6, proto, src, dst, 0, 0, 0, -1, -1)
            return (6, proto, src, dst, 0, 0, 0, b[subofs], b[subofs + 1])
    else:
        return (0, PROTO_UNKNOWN, 0, 0, 0, 0, 0, -1, -1)

    if proto == PROTO_TCP:
        if sublen < SIZE_TCP_HEADER:
            return (ver, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
        sp, dp = _PORTS.unpack_from(b, subofs)
        return (ver, proto, src, dst, sp, dp, b[subofs + 13], -1, -1)
    if proto == PROTO_UDP:
        if sublen < SIZE_UDP_HEADER:
            return (ver, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
        sp, dp = _PORTS.unpack_from(b, subofs)
        return (ver, proto, src, dst, sp, dp, 0, -1, -1)
    if proto == PROTO_SCTP:
        if sublen < SIZE_SCTP_HEADER:
            return (ver, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
        sp, dp = _PORTS.unpack_from(b, subofs)
        return (ver, proto, src, dst, sp, dp, 0, -1, -1)
    if proto == PROTO_FRAGMENT:
        # 0xff is our internal marker; seeing it on the wire is suspicious.
        return (ver, PROTO_UNKNOWN, src, dst, 0, 0, 0, -1, -1)
    return (ver, proto, src, dst, 0, 0, 0, -1, -1)
