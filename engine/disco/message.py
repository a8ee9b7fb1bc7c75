"""Disco message plaintext codec (sans-IO): Ping, Pong and CallMeMaybe, version 0."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

# Plaintext inside the box (tailscale disco/disco.go):
#   1b type | 1b version (0) | payload
#   Ping:        12b TxID | 32b sender node public key (optional for old peers) | padding
#   Pong:        12b TxID | 16b observed source IP (IPv4 as ::ffff:a.b.c.d) | 2b BE port
#   CallMeMaybe: k x (16b IP | 2b BE port), k > 0
# Parsers ignore trailing bytes (forward compatibility).
TYPE_PING = 0x01
TYPE_PONG = 0x02
TYPE_CALL_ME_MAYBE = 0x03
VERSION = 0
TXID_LEN = 12
KEY_LEN = 32
EP_LEN = 18
PONG_LEN = TXID_LEN + EP_LEN
# Endpoints decoded from one CallMeMaybe; the rest are counted in CallMeMaybe.dropped, not decoded
# (a 64 KiB DERP frame could otherwise carry ~3600, each one pinged: a reflection amplifier).
MAX_CALL_ME_MAYBE_ENDPOINTS = 32

AddrPort = tuple[str, int]


class DiscoParseError(ValueError):
    """A disco plaintext could not be parsed."""


def pack_addrport(ap: AddrPort) -> bytes:
    """16-byte IP (IPv4-mapped for v4) + BE port."""
    ip = ipaddress.ip_address(ap[0])
    raw = ip.packed if ip.version == 6 else b"\x00" * 10 + b"\xff\xff" + ip.packed
    return raw + struct.pack("!H", ap[1])


def unpack_addrport(b: bytes) -> AddrPort:
    """Inverse of pack_addrport; IPv4-mapped addresses come back as dotted quads."""
    ip = ipaddress.IPv6Address(b[:16])
    mapped = ip.ipv4_mapped
    return (str(mapped) if mapped is not None else str(ip), struct.unpack("!H", b[16:18])[0])


@dataclass(frozen=True, slots=True)
class Ping:
    """Path probe; `node_key` is the sender's WireGuard key (b"" from very old peers)."""

    txid: bytes
    node_key: bytes = b""
    padding: int = 0

    def marshal(self) -> bytes:
        return bytes((TYPE_PING, VERSION)) + self.txid + self.node_key + b"\x00" * self.padding


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a Ping carrying the source ip:port the Ping was seen from."""

    txid: bytes
    src: AddrPort

    def marshal(self) -> bytes:
        return bytes((TYPE_PONG, VERSION)) + self.txid + pack_addrport(self.src)


@dataclass(frozen=True, slots=True)
class CallMeMaybe:
    """Sent via DERP only: 'these are my endpoints, ping them now'."""

    endpoints: tuple[AddrPort, ...]
    dropped: int = field(default=0, compare=False)  # endpoints beyond MAX_CALL_ME_MAYBE_ENDPOINTS (parse only)

    def marshal(self) -> bytes:
        return bytes((TYPE_CALL_ME_MAYBE, VERSION)) + b"".join(pack_addrport(e) for e in self.endpoints)


Message = Ping | Pong | CallMeMaybe


def parse(b: bytes) -> Message | None:
    """Parse a decrypted payload; None for an unknown type (dropped silently, as tailscale does)."""
    if len(b) < 2:
        raise DiscoParseError(f"disco payload too short ({len(b)} bytes)")
    mtype, ver, p = b[0], b[1], b[2:]
    if mtype == TYPE_PING:
        if len(p) < TXID_LEN:
            raise DiscoParseError(f"ping too short ({len(p)} bytes)")
        nk = p[TXID_LEN : TXID_LEN + KEY_LEN] if len(p) >= TXID_LEN + KEY_LEN else b""
        pad = len(p) - TXID_LEN - len(nk)
        return Ping(txid=bytes(p[:TXID_LEN]), node_key=bytes(nk), padding=pad)
    if mtype == TYPE_PONG:
        if len(p) < PONG_LEN:
            raise DiscoParseError(f"pong too short ({len(p)} bytes)")
        return Pong(txid=bytes(p[:TXID_LEN]), src=unpack_addrport(p[TXID_LEN:PONG_LEN]))
    if mtype == TYPE_CALL_ME_MAYBE:
        # tailscale ignores (empty message) unless len%18==0, ver==0 and k>0
        if len(p) % EP_LEN != 0 or ver != 0 or not p:
            return CallMeMaybe(endpoints=())
        k = len(p) // EP_LEN
        take = min(k, MAX_CALL_ME_MAYBE_ENDPOINTS)
        return CallMeMaybe(
            endpoints=tuple(unpack_addrport(p[i * EP_LEN : (i + 1) * EP_LEN]) for i in range(take)), dropped=k - take
        )
    return None
