"""STUN (RFC 5389) binding requests as tailscale's derpers require them, and response parsing."""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

# Header (RFC 5389 §6), 20 bytes:
#   2b type | 2b length of attributes (BE) | 4b magic cookie 21 12 a4 42 | 12b transaction ID
# Attributes: 2b type | 2b length | value padded to 4 bytes.
HEADER_LEN = 20
TXID_LEN = 12
MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101

ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_XOR_MAPPED_ADDRESS_ALT = 0x8020  # pre-RFC5389 code point some servers still send
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028

# derper / headscale's STUN listeners drop requests whose SOFTWARE is not this value
# or whose last attribute is not FINGERPRINT (tailscale net/stun ParseBindingRequest).
SOFTWARE = b"tailnode"
FINGERPRINT_XOR = 0x5354554E  # RFC 5389 §15.5: "STUN" in ASCII
FAMILY_V4 = 0x01
FAMILY_V6 = 0x02

# Request = header + SOFTWARE(4+8) + FINGERPRINT(4+4)
REQUEST_LEN = HEADER_LEN + 4 + len(SOFTWARE) + 8


class StunParseError(ValueError):
    """A datagram is not a STUN message we accept."""


@dataclass(frozen=True, slots=True)
class BindingResponse:
    """A parsed binding success response: the reflexive (public) ip:port the server saw."""

    txid: bytes
    addr: tuple[str, int]


def fingerprint(data: bytes) -> int:
    """RFC 5389 §15.5 FINGERPRINT value of `data` (all message bytes before the attribute)."""
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def new_txid(rand: bytes) -> bytes:
    """Validate a caller-supplied 12-byte random transaction ID (cores take randomness as input)."""
    if len(rand) != TXID_LEN:
        raise ValueError(f"STUN transaction ID must be {TXID_LEN} bytes, got {len(rand)}")
    return bytes(rand)


def build_request(txid: bytes) -> bytes:
    """Binding request with SOFTWARE="tailnode" and a trailing FINGERPRINT."""
    txid = new_txid(txid)
    body_len = REQUEST_LEN - HEADER_LEN
    b = struct.pack("!HH", BINDING_REQUEST, body_len) + MAGIC_COOKIE + txid
    b += struct.pack("!HH", ATTR_SOFTWARE, len(SOFTWARE)) + SOFTWARE
    # The header length already counts the fingerprint attribute (RFC 5389 §15.5).
    b += struct.pack("!HHI", ATTR_FINGERPRINT, 4, fingerprint(b))
    return b


def is_stun(b: bytes) -> bool:
    """Cheap demux test: top two bits zero and the magic cookie at bytes 4..8 (RFC 5389 §6)."""
    return len(b) >= HEADER_LEN and b[0] & 0xC0 == 0 and b[4:8] == MAGIC_COOKIE


def is_binding_response(b: bytes) -> bool:
    """True if `b` looks like a binding success response (type 0x0101), as magicsock demuxes."""
    return is_stun(b) and b[0] == 0x01 and b[1] == 0x01


def _iter_attrs(body: bytes) -> Iterator[tuple[int, bytes, int]]:
    off = 0
    while off + 4 <= len(body):
        atype, alen = struct.unpack_from("!HH", body, off)
        start = off + 4
        end = start + alen
        if end > len(body):
            raise StunParseError(f"attribute 0x{atype:04x} length {alen} overruns message")
        yield atype, body[start:end], off
        off = start + ((alen + 3) & ~3)
    if off != len(body) and off < len(body):
        raise StunParseError("trailing bytes after attributes")


def _parse_addr(value: bytes, xor: bool, txid: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunParseError(f"address attribute too short ({len(value)} bytes)")
    family = value[1]
    port = struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if family == FAMILY_V4:
        if len(raw) != 4:
            raise StunParseError(f"IPv4 address attribute has {len(raw)} address bytes")
        key = MAGIC_COOKIE
    elif family == FAMILY_V6:
        if len(raw) != 16:
            raise StunParseError(f"IPv6 address attribute has {len(raw)} address bytes")
        key = MAGIC_COOKIE + txid
    else:
        raise StunParseError(f"unknown address family 0x{family:02x}")
    if xor:
        port ^= 0x2112
        raw = bytes(a ^ k for a, k in zip(raw, key))
    return str(ipaddress.ip_address(raw)), port


def parse_message(b: bytes) -> tuple[int, bytes, list[tuple[int, bytes]]]:
    """Split a STUN message into (type, txid, [(attr type, value)]) checking lengths and FINGERPRINT."""
    if not is_stun(b):
        raise StunParseError("not a STUN message")
    mtype, mlen = struct.unpack_from("!HH", b, 0)
    if mlen % 4 != 0:
        raise StunParseError(f"message length {mlen} is not a multiple of 4")
    if HEADER_LEN + mlen != len(b):
        raise StunParseError(f"message length {mlen} does not match datagram of {len(b)} bytes")
    txid = b[8:20]
    body = b[HEADER_LEN:]
    attrs: list[tuple[int, bytes]] = []
    for atype, value, off in _iter_attrs(body):
        if atype == ATTR_FINGERPRINT:
            if len(value) != 4:
                raise StunParseError("FINGERPRINT must be 4 bytes")
            if struct.unpack("!I", value)[0] != fingerprint(b[: HEADER_LEN + off]):
                raise StunParseError("FINGERPRINT mismatch")
            if HEADER_LEN + off + 8 != len(b):
                raise StunParseError("FINGERPRINT is not the last attribute")
        attrs.append((atype, value))
    return mtype, txid, attrs


def parse_response(b: bytes, want_txid: bytes | None = None) -> BindingResponse:
    """Parse a binding success response; reject a transaction ID other than `want_txid`."""
    mtype, txid, attrs = parse_message(b)
    if mtype != BINDING_SUCCESS:
        raise StunParseError(f"not a binding success response (type 0x{mtype:04x})")
    if want_txid is not None and txid != want_txid:
        raise StunParseError("transaction ID mismatch")
    xor_addr = plain_addr = None
    for atype, value in attrs:
        if atype in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_ALT) and xor_addr is None:
            xor_addr = _parse_addr(value, True, txid)
        elif atype == ATTR_MAPPED_ADDRESS and plain_addr is None:
            plain_addr = _parse_addr(value, False, txid)
    addr = xor_addr or plain_addr
    if addr is None:
        raise StunParseError("response has no (XOR-)MAPPED-ADDRESS")
    return BindingResponse(txid=txid, addr=addr)


def parse_binding_request(b: bytes) -> bytes:
    """Server side, as derper checks it: return the txid of a tailscale-style binding request."""
    mtype, txid, attrs = parse_message(b)
    if mtype != BINDING_REQUEST:
        raise StunParseError(f"not a binding request (type 0x{mtype:04x})")
    if not attrs or attrs[-1][0] != ATTR_FINGERPRINT:
        raise StunParseError("request lacks a trailing FINGERPRINT")
    if (ATTR_SOFTWARE, SOFTWARE) not in attrs:
        raise StunParseError('request lacks SOFTWARE="tailnode"')
    return txid


def build_response(txid: bytes, addr: tuple[str, int]) -> bytes:
    """Binding success with XOR-MAPPED-ADDRESS and FINGERPRINT (for our test STUN server)."""
    txid = new_txid(txid)
    ip = ipaddress.ip_address(addr[0])
    if ip.version == 4:
        family, key = FAMILY_V4, MAGIC_COOKIE
    else:
        family, key = FAMILY_V6, MAGIC_COOKIE + txid
    xaddr = bytes(a ^ k for a, k in zip(ip.packed, key))
    value = struct.pack("!BBH", 0, family, addr[1] ^ 0x2112) + xaddr
    attrs = struct.pack("!HH", ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    body_len = len(attrs) + 8
    b = struct.pack("!HH", BINDING_SUCCESS, body_len) + MAGIC_COOKIE + txid + attrs
    return b + struct.pack("!HHI", ATTR_FINGERPRINT, 4, fingerprint(b))
