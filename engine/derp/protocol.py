"""DERP client connection state machine (sans-IO): HTTP upgrade, login, frames in, bytes out."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.public

from engine.derp import frames as f

# Flow:
#   start()                    -> "GET /derp HTTP/1.1 ... Upgrade: DERP" queued
#   HTTP_UPGRADE  + "101 ..."  -> AWAIT_SERVER_KEY
#   AWAIT_SERVER_KEY + ServerKey -> ClientInfo queued, CONNECTED, event Connected
#   CONNECTED + frames         -> events; server Ping answered with Pong automatically
#   any error / read timeout   -> CLOSED (event Closed with the reason); CLOSED is final.
READ_TIMEOUT = 120.0  # seconds without any frame -> dead (derp_client.go Recv)
MAX_HTTP_HEADER = 16 << 10


class State(enum.Enum):
    IDLE = "idle"
    HTTP_UPGRADE = "http-upgrade"
    AWAIT_SERVER_KEY = "await-server-key"
    CONNECTED = "connected"
    CLOSED = "closed"


class DerpProtocolError(Exception):
    """The server misbehaved (bad HTTP answer, bad frame, bad box); the connection is closed."""


@dataclass(frozen=True, slots=True)
class Connected:
    server_key: bytes


@dataclass(frozen=True, slots=True)
class ServerInfo:
    info: dict[str, Any]


# Server messages the core passes on as they were parsed are its events as well (one type each).
PacketReceived = f.RecvPacket
PeerGoneEvent = f.PeerGone
PeerPresentEvent = f.PeerPresent
HealthEvent = f.Health
RestartingEvent = f.Restarting
PongReceived = f.Pong


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str
    malformed: bool = False


Event = (
    Connected
    | ServerInfo
    | PacketReceived
    | PeerGoneEvent
    | PeerPresentEvent
    | HealthEvent
    | RestartingEvent
    | PongReceived
    | Closed
)


@dataclass
class DerpCounters:
    """Per-connection counters exposed in status."""

    frames_in: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    unknown_frames: int = 0
    malformed: int = 0
    dropped_not_connected: int = 0
    server_pings: int = 0
    keepalives: int = 0


@dataclass
class DerpClientConn:
    """One DERP connection as a pure state machine; time and randomness are inputs."""

    private_key: nacl.public.PrivateKey
    host: str
    random: Callable[[int], bytes]
    can_ack_pings: bool = True
    user_agent: str = "meshvpn"
    state: State = State.IDLE
    server_key: bytes | None = None
    counters: DerpCounters = field(default_factory=DerpCounters)
    _out: bytearray = field(default_factory=bytearray)
    _http: bytearray = field(default_factory=bytearray)
    _reader: f.FrameReader = field(default_factory=f.FrameReader)
    _deadline: float | None = None

    @property
    def public_key(self) -> bytes:
        return bytes(self.private_key.public_key)

    # ---- inputs -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Queue the HTTP upgrade request."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"start() in state {self.state.value}")
        req = (
            "GET /derp HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: DERP\r\n"
            f"User-Agent: {self.user_agent}\r\n"
            "\r\n"
        )
        self._out += req.encode("ascii")
        self.state = State.HTTP_UPGRADE
        self._deadline = now + READ_TIMEOUT

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from the socket; returns events. Never raises on peer input."""
        if self.state in (State.CLOSED, State.IDLE):
            return []
        self.counters.bytes_in += len(data)
        self._deadline = now + READ_TIMEOUT
        events: list[Event] = []
        try:
            if self.state is State.HTTP_UPGRADE:
                self._http += data
                end = self._http.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._http) > MAX_HTTP_HEADER:
                        raise DerpProtocolError("HTTP upgrade response header too large")
                    return events
                head = bytes(self._http[:end]).decode("latin-1")
                rest = bytes(self._http[end + 4 :])
                self._http.clear()
                self._check_upgrade(head)
                self.state = State.AWAIT_SERVER_KEY
                data = rest
            self._reader.feed(data)
            while self.state is not State.CLOSED:
                fr = self._reader.next_frame()
                if fr is None:
                    break
                self._handle_frame(fr[0], fr[1], events)
        except (DerpProtocolError, f.DerpFrameError) as e:
            self.counters.malformed += 1
            events.append(self._close(str(e), malformed=True))
        return events

    def _check_upgrade(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise DerpProtocolError(f"bad HTTP status line {lines[0][:80]!r}")
        if parts[1] != "101":
            raise DerpProtocolError(f"DERP upgrade refused: HTTP {' '.join(parts[1:])[:80]}")

    def _handle_frame(self, ftype: int, payload: bytes, events: list[Event]) -> None:
        self.counters.frames_in += 1
        msg = f.parse_frame(ftype, payload)
        if self.state is State.AWAIT_SERVER_KEY:
            if not isinstance(msg, f.ServerKey):
                raise DerpProtocolError(f"expected ServerKey frame, got type 0x{ftype:02x}")
            self.server_key = msg.key
            self._send_client_info()
            self.state = State.CONNECTED
            events.append(Connected(server_key=msg.key))
            return
        match msg:
            case f.RecvPacket():
                self.counters.packets_in += 1
                events.append(msg)
            case f.KeepAlive():
                self.counters.keepalives += 1
            case f.Ping(data=data):
                self.counters.server_pings += 1
                self._out += f.encode_pong(data)
            case f.Pong() | f.PeerGone() | f.PeerPresent() | f.Health() | f.Restarting():
                events.append(msg)
            case f.ServerInfoSealed(sealed=sealed):
                events.append(ServerInfo(info=self._open_server_info(sealed)))
            case f.ServerKey():
                raise DerpProtocolError("unexpected second ServerKey frame")
            case _:
                self.counters.unknown_frames += 1  # skipped by length, as the protocol says

    def _send_client_info(self) -> None:
        info = {"version": f.PROTOCOL_VERSION, "CanAckPings": self.can_ack_pings}
        msg = json.dumps(info, separators=(",", ":")).encode()
        sealed = bytes(self._server_box().encrypt(msg, self.random(f.NONCE_LEN)))  # nonce || box
        self._out += f.encode_frame(f.FrameType.CLIENT_INFO, self.public_key + sealed)

    def _server_box(self) -> nacl.public.Box:
        if self.server_key is None:  # only called once the ServerKey frame has set it
            raise DerpProtocolError("no server key yet")
        return nacl.public.Box(self.private_key, nacl.public.PublicKey(self.server_key))

    def _open_server_info(self, sealed: bytes) -> dict[str, Any]:
        try:
            plain = self._server_box().decrypt(sealed)
            info = json.loads(plain)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
            raise DerpProtocolError(f"ServerInfo box did not open: {e.__class__.__name__}") from e
        if not isinstance(info, dict):
            raise DerpProtocolError("ServerInfo JSON is not an object")
        return info

    def send_packet(self, dst: bytes, packet: bytes) -> bool:
        """Queue a SendPacket; False (counted) if not connected."""
        if self.state is not State.CONNECTED:
            self.counters.dropped_not_connected += 1
            return False
        frame = f.encode_send_packet(dst, packet)
        self._out += frame
        self.counters.packets_out += 1
        return True

    def note_preferred(self, preferred: bool) -> None:
        if self.state is State.CONNECTED:
            self._out += f.encode_note_preferred(preferred)

    def send_ping(self, data: bytes) -> None:
        if self.state is State.CONNECTED:
            self._out += f.encode_ping(data)

    def close(self, reason: str = "closed locally") -> Closed | None:
        if self.state is State.CLOSED:
            return None
        return self._close(reason)

    def _close(self, reason: str, malformed: bool = False) -> Closed:
        self.state = State.CLOSED
        self._deadline = None
        self._out.clear()
        return Closed(reason=reason, malformed=malformed)

    # ---- outputs ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self.counters.bytes_out += len(out)
        return out

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[Event]:
        if self._deadline is not None and now >= self._deadline and self.state is not State.CLOSED:
            return [self._close("read timeout: no frame from server in 120 s")]
        return []
