"""DERP v2 frame codec (sans-IO): 1-byte type, 4-byte BE length, payload; typed server messages."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

# Protocol flow (tailscale derp/derp.go):
#   S->C ServerKey   magic "DERP🔑" (8) | server public key (32) [| ignored extra]
#   C->S ClientInfo  client node public key (32) | nonce (24) | box(JSON)
#   S->C ServerInfo  nonce (24) | box(JSON {"version":2,...})
#   then SendPacket / RecvPacket and the control frames below, in any order.
FRAME_HEADER_LEN = 5
PROTOCOL_VERSION = 2
MAGIC = b"DERP\xf0\x9f\x94\x91"  # "DERP🔑"
KEY_LEN = 32
NONCE_LEN = 24
MAX_PACKET_SIZE = 64 << 10  # server rejects a SendPacket payload above this
MAX_FRAME_SIZE = 1 << 20  # client rejects any frame above this (derp_client.go recvTimeout)
MAX_INFO_LEN = 1 << 20
PING_LEN = 8


class FrameType(enum.IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(enum.IntEnum):
    DISCONNECTED = 0x00
    NOT_HERE = 0x01


class DerpFrameError(ValueError):
    """The server sent bytes that are not a valid DERP frame (the connection must be dropped)."""


def encode_frame(ftype: int, payload: bytes = b"") -> bytes:
    """One frame: type byte, BE uint32 payload length, payload."""
    return struct.pack("!BI", ftype, len(payload)) + payload


def encode_send_packet(dst: bytes, packet: bytes) -> bytes:
    if len(dst) != KEY_LEN:
        raise ValueError(f"destination key must be {KEY_LEN} bytes, got {len(dst)}")
    if len(packet) > MAX_PACKET_SIZE:
        raise ValueError(f"packet too big: {len(packet)} > {MAX_PACKET_SIZE}")
    return struct.pack("!BI", FrameType.SEND_PACKET, KEY_LEN + len(packet)) + dst + packet


def encode_note_preferred(preferred: bool) -> bytes:
    return encode_frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00")


def encode_ping(data: bytes) -> bytes:
    if len(data) != PING_LEN:
        raise ValueError(f"ping payload must be {PING_LEN} bytes")
    return encode_frame(FrameType.PING, data)


def encode_pong(data: bytes) -> bytes:
    if len(data) != PING_LEN:
        raise ValueError(f"pong payload must be {PING_LEN} bytes")
    return encode_frame(FrameType.PONG, data)


# ---- typed messages received from the server ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerKey:
    key: bytes


@dataclass(frozen=True, slots=True)
class ServerInfoSealed:
    """ServerInfo before opening: nonce||box (opened by the client state machine)."""

    sealed: bytes


@dataclass(frozen=True, slots=True)
class RecvPacket:
    src: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class PeerGone:
    key: bytes
    reason: int = PeerGoneReason.DISCONNECTED


@dataclass(frozen=True, slots=True)
class PeerPresent:
    key: bytes
    ip_port: tuple[bytes, int] | None = None
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Health:
    problem: str


@dataclass(frozen=True, slots=True)
class Restarting:
    reconnect_in: float  # seconds
    try_for: float  # seconds


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    ftype: int
    length: int


ServerMessage = (
    ServerKey
    | ServerInfoSealed
    | RecvPacket
    | KeepAlive
    | PeerGone
    | PeerPresent
    | Ping
    | Pong
    | Health
    | Restarting
    | UnknownFrame
)


def parse_frame(ftype: int, p: bytes) -> ServerMessage:
    """Decode one server->client frame payload; raises DerpFrameError naming the field."""
    if ftype == FrameType.SERVER_KEY:
        if len(p) < len(MAGIC) + KEY_LEN:
            raise DerpFrameError(f"ServerKey frame too short ({len(p)} bytes)")
        if p[: len(MAGIC)] != MAGIC:
            raise DerpFrameError("ServerKey frame has bad magic")
        return ServerKey(key=bytes(p[len(MAGIC) : len(MAGIC) + KEY_LEN]))
    if ftype == FrameType.SERVER_INFO:
        if len(p) < NONCE_LEN:
            raise DerpFrameError(f"ServerInfo frame too short ({len(p)} bytes)")
        if len(p) > NONCE_LEN + MAX_INFO_LEN:
            raise DerpFrameError(f"ServerInfo frame too long ({len(p)} bytes)")
        return ServerInfoSealed(sealed=bytes(p))
    if ftype == FrameType.RECV_PACKET:
        if len(p) < KEY_LEN:
            raise DerpFrameError(f"RecvPacket frame too short ({len(p)} bytes)")
        return RecvPacket(src=bytes(p[:KEY_LEN]), data=bytes(p[KEY_LEN:]))
    if ftype == FrameType.KEEP_ALIVE:
        return KeepAlive()
    if ftype == FrameType.PEER_GONE:
        if len(p) < KEY_LEN:
            raise DerpFrameError(f"PeerGone frame too short ({len(p)} bytes)")
        reason = p[KEY_LEN] if len(p) > KEY_LEN else PeerGoneReason.DISCONNECTED
        return PeerGone(key=bytes(p[:KEY_LEN]), reason=reason)
    if ftype == FrameType.PEER_PRESENT:
        if len(p) < KEY_LEN:
            raise DerpFrameError(f"PeerPresent frame too short ({len(p)} bytes)")
        ip_port = None
        flags = 0
        if len(p) >= KEY_LEN + 18:
            ip_port = (bytes(p[KEY_LEN : KEY_LEN + 16]), struct.unpack_from("!H", p, KEY_LEN + 16)[0])
            if len(p) >= KEY_LEN + 19:
                flags = p[KEY_LEN + 18]
        return PeerPresent(key=bytes(p[:KEY_LEN]), ip_port=ip_port, flags=flags)
    if ftype == FrameType.PING:
        if len(p) < PING_LEN:
            raise DerpFrameError(f"Ping frame too short ({len(p)} bytes)")
        return Ping(data=bytes(p[:PING_LEN]))
    if ftype == FrameType.PONG:
        if len(p) < PING_LEN:
            raise DerpFrameError(f"Pong frame too short ({len(p)} bytes)")
        return Pong(data=bytes(p[:PING_LEN]))
    if ftype == FrameType.HEALTH:
        return Health(problem=bytes(p).decode("utf-8", "replace"))
    if ftype == FrameType.RESTARTING:
        if len(p) < 8:
            raise DerpFrameError(f"Restarting frame too short ({len(p)} bytes)")
        a, b = struct.unpack_from("!II", p, 0)
        return Restarting(reconnect_in=a / 1000.0, try_for=b / 1000.0)
    return UnknownFrame(ftype=ftype, length=len(p))


class FrameReader:
    """Incremental splitter of a byte stream into (type, payload) frames, with a size cap."""

    def __init__(self, max_frame: int = MAX_FRAME_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete frame, or None if more bytes are needed."""
        if len(self._buf) < FRAME_HEADER_LEN:
            return None
        ftype, length = struct.unpack_from("!BI", self._buf, 0)
        if length > self._max:
            raise DerpFrameError(f"frame of type 0x{ftype:02x} too large ({length} > {self._max} bytes)")
        end = FRAME_HEADER_LEN + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[FRAME_HEADER_LEN:end])
        del self._buf[:end]
        return ftype, payload
