"""Builders for test IP/TCP/UDP/ICMP packets with correct checksums (slow reference code)."""

from __future__ import annotations

import ipaddress
import struct


def ref_sum(data: bytes) -> int:
    """Reference ones-complement sum (folded, not inverted), one word at a time."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_csum(data: bytes) -> int:
    return 0xFFFF - ref_sum(data)


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def ip_header(src: str, dst: str, proto: int, payload_len: int, *, ident: int = 1, ttl: int = 64) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        h = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000, ttl, proto, 0, s.packed, d.packed)
        )
        struct.pack_into("!H", h, 10, ref_csum(bytes(h)))
        return bytes(h)
    return struct.pack("!IHBB16s16s", 6 << 28, payload_len, proto, ttl, s.packed, d.packed)


def tcp_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    payload: bytes,
    *,
    ack: int = 1000,
    flags: int = 0x10,
    window: int = 500,
    options: bytes = b"",
    ident: int = 1,
    partial: bool = False,
) -> bytes:
    """An IPv4/IPv6 TCP packet; ``partial``: checksum field holds only the pseudo-header sum."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    thl = 20 + len(options)
    th = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags, window, 0, 0) + options)
    seg = bytes(th) + payload
    pseudo = _pseudo(s, d, 6, len(seg))
    c = ref_sum(pseudo) if partial else ref_csum(pseudo + seg)
    struct.pack_into("!H", th, 16, c)
    return ip_header(src, dst, 6, len(seg), ident=ident) + bytes(th) + payload


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    uh = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0))
    c = ref_csum(_pseudo(s, d, 17, 8 + len(payload)) + bytes(uh) + payload) or 0xFFFF
    struct.pack_into("!H", uh, 6, c)
    return ip_header(src, dst, 17, 8 + len(payload)) + bytes(uh) + payload


def icmp_echo(src: str, dst: str, ident: int = 1, seq: int = 1, payload: bytes = b"ping") -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        body = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload)
        struct.pack_into("!H", body, 2, ref_csum(bytes(body)))
        return ip_header(src, dst, 1, len(body)) + bytes(body)
    body = bytearray(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload)
    struct.pack_into("!H", body, 2, ref_csum(_pseudo(s.packed, d.packed, 58, len(body)) + bytes(body)))
    return ip_header(src, dst, 58, len(body)) + bytes(body)


def tcp_checksum_ok(pkt: bytes) -> bool:
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        if ref_sum(pkt[:ihl]) != 0xFFFF:
            return False
        src, dst, body = pkt[12:16], pkt[16:20], pkt[ihl:]
    else:
        src, dst, body = pkt[8:24], pkt[24:40], pkt[40:]
    return ref_sum(_pseudo(src, dst, 6, len(body)) + body) == 0xFFFF
