"""WireGuard wire messages (whitepaper §5.4): frozen dataclasses with parse/marshal and sizes."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_COOKIE_REPLY = 3
TYPE_TRANSPORT = 4

SIZE_INITIATION = 148
SIZE_RESPONSE = 92
SIZE_COOKIE_REPLY = 64
SIZE_TRANSPORT_HEADER = 16
SIZE_KEEPALIVE = SIZE_TRANSPORT_HEADER + 16  # header + tag of an empty plaintext
MAC1_OFFSET_INITIATION = 116  # mac1 covers msg[:116], mac2 covers msg[:132]
MAC1_OFFSET_RESPONSE = 60  # mac1 covers msg[:60], mac2 covers msg[:76]

_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<II24s32s")
TRANSPORT_HEADER = struct.Struct("<IIQ")  # type word (type | 3 zero bytes), receiver, counter

assert _INITIATION.size == SIZE_INITIATION
assert _RESPONSE.size == SIZE_RESPONSE
assert _COOKIE_REPLY.size == SIZE_COOKIE_REPLY
assert TRANSPORT_HEADER.size == SIZE_TRANSPORT_HEADER


class MessageParseError(ValueError):
    """A datagram is not a well-formed WireGuard message; the text names the field and size."""


def _need(name: str, field: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name}.{field}: length {len(value)}, want {size} bytes")


def _check(b: bytes, name: str, size: int, msg_type: int, exact: bool = True) -> None:
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise MessageParseError(f"{name}: expected bytes, got {type(b).__name__}")
    n = len(b)
    if (n != size) if exact else (n < size):
        want = f"{size}" if exact else f"at least {size}"
        raise MessageParseError(f"{name}: length {n}, want {want} bytes")
    word = int.from_bytes(b[0:4], "little")
    if word != msg_type:
        raise MessageParseError(
            f"{name}: type field is {b[0]} with reserved bytes {bytes(b[1:4]).hex()}, want {msg_type} and 000000"
        )


# 1b type (0x01) | 3b reserved | 4b sender LE | 32b ephemeral | 48b AEAD(static) |
# 28b AEAD(timestamp) | 16b mac1 | 16b mac2                                  (§5.4.2) = 148
@dataclasses.dataclass(frozen=True, slots=True)
class Initiation:
    """Handshake initiation (message type 1)."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def marshal(self) -> bytes:
        for f, n in (
            ("ephemeral", 32),
            ("encrypted_static", 48),
            ("encrypted_timestamp", 28),
            ("mac1", 16),
            ("mac2", 16),
        ):
            _need("initiation", f, getattr(self, f), n)
        return _INITIATION.pack(
            TYPE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse(cls, b: bytes) -> "Initiation":
        _check(b, "initiation", SIZE_INITIATION, TYPE_INITIATION)
        _, sender, eph, st, ts, m1, m2 = _INITIATION.unpack(b)
        return cls(sender, eph, st, ts, m1, m2)


# 1b type (0x02) | 3b reserved | 4b sender LE | 4b receiver LE | 32b ephemeral |
# 16b AEAD(empty) | 16b mac1 | 16b mac2                                      (§5.4.3) = 92
@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """Handshake response (message type 2)."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def marshal(self) -> bytes:
        for f, n in (("ephemeral", 32), ("encrypted_nothing", 16), ("mac1", 16), ("mac2", 16)):
            _need("response", f, getattr(self, f), n)
        return _RESPONSE.pack(
            TYPE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse(cls, b: bytes) -> "Response":
        _check(b, "response", SIZE_RESPONSE, TYPE_RESPONSE)
        _, sender, receiver, eph, empty, m1, m2 = _RESPONSE.unpack(b)
        return cls(sender, receiver, eph, empty, m1, m2)


# 1b type (0x03) | 3b reserved | 4b receiver LE | 24b nonce | 32b XAEAD(cookie)  (§5.4.7) = 64
@dataclasses.dataclass(frozen=True, slots=True)
class CookieReply:
    """Cookie reply (message type 3), sent instead of a response when under load."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def marshal(self) -> bytes:
        _need("cookie reply", "nonce", self.nonce, 24)
        _need("cookie reply", "encrypted_cookie", self.encrypted_cookie, 32)
        return _COOKIE_REPLY.pack(TYPE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)

    @classmethod
    def parse(cls, b: bytes) -> "CookieReply":
        _check(b, "cookie reply", SIZE_COOKIE_REPLY, TYPE_COOKIE_REPLY)
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(b)
        return cls(receiver, nonce, cookie)


# 1b type (0x04) | 3b reserved | 4b receiver LE | 8b counter LE | ciphertext (≥ 16b tag)
#                                                                            (§5.4.6) ≥ 32
@dataclasses.dataclass(frozen=True, slots=True)
class Transport:
    """Transport data message (type 4); an empty plaintext (32 bytes on the wire) is a keepalive."""

    receiver: int
    counter: int
    ciphertext: bytes

    def marshal(self) -> bytes:
        return TRANSPORT_HEADER.pack(TYPE_TRANSPORT, self.receiver, self.counter) + self.ciphertext

    @classmethod
    def parse(cls, b: bytes) -> "Transport":
        _check(b, "transport", SIZE_KEEPALIVE, TYPE_TRANSPORT, exact=False)
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(b)
        return cls(receiver, counter, bytes(b[SIZE_TRANSPORT_HEADER:]))


Message = Initiation | Response | CookieReply | Transport

_PARSERS: dict[int, Callable[[bytes], Message]] = {
    TYPE_INITIATION: Initiation.parse,
    TYPE_RESPONSE: Response.parse,
    TYPE_COOKIE_REPLY: CookieReply.parse,
    TYPE_TRANSPORT: Transport.parse,
}


def parse(b: bytes) -> Message:
    """Parse any WireGuard message by its type byte; raises MessageParseError."""
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise MessageParseError(f"message: expected bytes, got {type(b).__name__}")
    if len(b) < 4:
        raise MessageParseError(f"message: length {len(b)}, want at least 4 bytes")
    p = _PARSERS.get(b[0])
    if p is None:
        raise MessageParseError(f"message: type field is {b[0]}, want 1, 2, 3 or 4")
    return p(b)
