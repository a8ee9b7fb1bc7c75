"""Tiny IPv4/IPv6 packet builders for filter tests."""

from __future__ import annotations

import ipaddress
import struct


def l4_tcp(sport: int, dport: int, flags: int = 0x02) -> tuple[int, bytes]:
    return 6, struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 65535, 0, 0)


def l4_udp(sport: int, dport: int, payload: bytes = b"x") -> tuple[int, bytes]:
    return 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def l4_icmp(proto: int, typ: int, code: int = 0) -> tuple[int, bytes]:
    return proto, struct.pack("!BBHI", typ, code, 0, 0)


def ip(src: str, dst: str, l4: tuple[int, bytes], *, frag: int = 0) -> bytes:
    proto, body = l4
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        if proto == 58:
            proto = 1
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, frag, 64, proto, 0, s.packed, d.packed)
        return hdr + body
    if proto == 1:
        proto = 58
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64, s.packed, d.packed) + body


def tcp(src, dst, sport, dport, flags=0x02):
    return ip(src, dst, l4_tcp(sport, dport, flags))


def udp(src, dst, sport, dport):
    return ip(src, dst, l4_udp(sport, dport))


def icmp(src, dst, typ, code=0):
    proto = 1 if ipaddress.ip_address(src).version == 4 else 58
    return ip(src, dst, l4_icmp(proto, typ, code))


def raw(src, dst, proto, body=b"\0" * 8):
    return ip(src, dst, (proto, body))
