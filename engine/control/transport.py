"""ts2021 transport: GET /key, HTTP/1.1 upgrade to Noise, early payload, HTTP/2 (h2) over Noise; asyncio adapter.

Connection flow (tailscale control/controlhttp, control/ts2021)::

    GET /key?v=<capver>                       -> {"publicKey":"mkey:..."}      (plain HTTP)
    POST /ts2021  Upgrade: tailscale-control-protocol, Connection: upgrade,
                  X-Tailscale-Handshake: base64(initiation 101 B)
    <- HTTP/1.1 101 Switching Protocols       then raw bytes:
    <- Noise response (51 B) or error frame (0x03)
    <- [records] early payload  "\\xff\\xff\\xffTS" | uint32 BE len | JSON EarlyNoise   (optional)
    <-> HTTP/2 with prior knowledge (client preface, :scheme https) inside Noise records

The sans-IO pieces (request building, response-head parsing, EarlyPayloadParser) are pure;
``ControlConn`` is the thin asyncio adapter that owns the socket and one reader task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from engine.control.noise import ClientHandshake, NoiseConn, RemoteProtocolError
from engine.tailcfg import EarlyNoise, OverTLSPublicKeyResponse, WireError, decode
from engine.types.keys import MachinePrivate, MachinePublic

UPGRADE_PATH = "/ts2021"
UPGRADE_PROTOCOL = "tailscale-control-protocol"
HANDSHAKE_HEADER = "X-Tailscale-Handshake"
EARLY_PAYLOAD_MAGIC = b"\xff\xff\xffTS"
EARLY_PAYLOAD_HEADER_LEN = 9  # magic (5) + uint32 BE length
MAX_EARLY_PAYLOAD = 10 << 20  # client rejects larger (ts2021 conn.go)
MAX_HTTP_HEAD = 64 << 10
H2_WINDOW = 16 << 20  # our receive window: whole maps arrive without stalls

SocketHook = Callable[[socket.socket], None]  # called on each new TCP socket before connect (e.g. SO_MARK)


class ControlTransportError(Exception):
    """Dialing, upgrading or talking HTTP/2 to the control server failed."""


class UpgradeError(ControlTransportError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"upgrade failed: HTTP {status} {reason}")
        self.status = status


@dataclass(frozen=True, slots=True)
class ServerURL:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "ServerURL":
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"control URL must be http(s)://host[:port], got {url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname, port)

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == default else f"{h}:{self.port}"


# --- sans-IO helpers ------------------------------------------------------------------


def build_upgrade_request(authority: str, initiation: bytes) -> bytes:
    hs = base64.b64encode(initiation).decode()
    return (
        f"POST {UPGRADE_PATH} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        f"Upgrade: {UPGRADE_PROTOCOL}\r\n"
        f"Connection: upgrade\r\n"
        f"{HANDSHAKE_HEADER}: {hs}\r\n"
        f"Content-Length: 0\r\n"
        f"\r\n"
    ).encode()


def parse_response_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status line + headers of an HTTP/1.1 response head (up to and excluding the blank line)."""
    try:
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code_s, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        status = int(code_s)
    except (ValueError, IndexError) as e:
        raise ControlTransportError(f"malformed HTTP response line {head[:40]!r}") from e
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise ControlTransportError(f"malformed HTTP header line {line[:40]!r}")
        headers[k.strip().lower()] = v.strip()
    return status, reason, headers


def check_upgrade_response(head: bytes) -> None:
    status, reason, headers = parse_response_head(head)
    if status != 101:
        raise UpgradeError(status, reason)
    if headers.get("upgrade", "").lower() != UPGRADE_PROTOCOL:
        raise ControlTransportError(f"upgrade: server answered Upgrade: {headers.get('upgrade')!r}")


class EarlyPayloadParser:
    """Decide whether the first plaintext bytes are an early payload or HTTP/2.

    feed(data) -> None while undecided; then ``done`` is True, ``early`` holds the
    EarlyNoise (or None if absent) and ``rest`` the bytes that belong to HTTP/2.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False
        self.early: EarlyNoise | None = None
        self.rest = b""

    def feed(self, data: bytes) -> None:
        if self.done:
            self.rest += data
            return
        self._buf += data
        if len(self._buf) < EARLY_PAYLOAD_HEADER_LEN:
            if not EARLY_PAYLOAD_MAGIC.startswith(bytes(self._buf[:5])):
                self._finish_without()
            return
        if bytes(self._buf[:5]) != EARLY_PAYLOAD_MAGIC:
            self._finish_without()
            return
        (length,) = struct.unpack(">I", self._buf[5:9])
        if length > MAX_EARLY_PAYLOAD:
            raise RemoteProtocolError(f"early payload too large: {length} bytes (max {MAX_EARLY_PAYLOAD})")
        if len(self._buf) < EARLY_PAYLOAD_HEADER_LEN + length:
            return
        body = bytes(self._buf[9 : 9 + length])
        try:
            self.early = decode(EarlyNoise, json.loads(body))
        except (ValueError, WireError, RecursionError) as e:
            raise RemoteProtocolError(f"early payload: invalid JSON: {e}") from None
        self.rest = bytes(self._buf[9 + length :])
        self._buf.clear()
        self.done = True

    def _finish_without(self) -> None:
        self.rest = bytes(self._buf)
        self._buf.clear()
        self.done = True


def encode_early_payload(early: dict) -> bytes:
    body = json.dumps(early).encode()
    return EARLY_PAYLOAD_MAGIC + struct.pack(">I", len(body)) + body


# --- asyncio adapter ------------------------------------------------------------------


async def _connect(host: str, port: int, socket_hook: SocketHook | None) -> socket.socket:
    """A connected non-blocking TCP socket to host:port (each resolved address in turn, IPv4/IPv6).

    We create the socket ourselves so ``socket_hook`` sees it before connect (the daemon marks
    it to bypass the exit-node table); asyncio.open_connection(host, port) offers no such seam.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if not infos:
        raise OSError(f"no address for {host}")
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            if socket_hook is not None:
                socket_hook(sock)
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as e:
            sock.close()
            last = e
        except BaseException:
            sock.close()
            raise
    assert last is not None
    raise last


async def _open(url: ServerURL, timeout: float, verify_tls: bool = True, socket_hook: SocketHook | None = None):
    ssl_ctx = None
    if url.scheme == "https":
        ssl_ctx = ssl.create_default_context()
        if not verify_tls:
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout):
            sock = await _connect(url.host, url.port, socket_hook)
            return await asyncio.open_connection(sock=sock, ssl=ssl_ctx, server_hostname=url.host if ssl_ctx else None)
    except (OSError, asyncio.TimeoutError) as e:
        if sock is not None:
            sock.close()
        raise ControlTransportError(f"dial {url.host}:{url.port}: {str(e) or type(e).__name__}") from e
    except BaseException:
        if sock is not None:
            sock.close()
        raise


async def http1_request(
    url: str, method: str = "GET", *, timeout: float = 10.0, socket_hook: SocketHook | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request with Connection: close (for /key and non-Noise ping answers)."""
    u = urlsplit(url)
    su = ServerURL.parse(f"{u.scheme}://{u.netloc}")
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    reader, writer = await _open(su, timeout, socket_hook=socket_hook)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {su.authority}\r\nConnection: close\r\n"
            f"User-Agent: meshvpn\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(MAX_HTTP_HEAD * 16)
        while True:
            async with asyncio.timeout(timeout):
                more = await reader.read(65536)
            if not more:
                break
            raw += more
    except (OSError, asyncio.TimeoutError) as e:
        raise ControlTransportError(f"{method} {url}: {str(e) or type(e).__name__}") from e
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ControlTransportError(f"{method} {url}: truncated HTTP response")
    status, _, headers = parse_response_head(head)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise ControlTransportError("malformed chunked body")
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


async def fetch_server_key(
    server_url: str, version: int, *, timeout: float = 10.0, socket_hook: SocketHook | None = None
) -> MachinePublic:
    """GET /key?v=N; returns the control server's Noise static key."""
    status, _, body = await http1_request(
        f"{server_url.rstrip('/')}/key?v={version}", timeout=timeout, socket_hook=socket_hook
    )
    if status != 200:
        raise ControlTransportError(f"GET /key: HTTP {status}: {body[:200]!r}")
    try:
        resp = decode(OverTLSPublicKeyResponse, json.loads(body))
    except (ValueError, WireError, RecursionError) as e:
        raise ControlTransportError(f"GET /key: invalid response: {e}") from None
    if resp.public_key is None or resp.public_key.is_zero():
        raise ControlTransportError("GET /key: no publicKey in response")
    return resp.public_key


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Stream:
    headers: asyncio.Future
    data: asyncio.Queue = field(default_factory=asyncio.Queue)  # bytes chunks; None = end
    window_waiters: list = field(default_factory=list)


class StreamResponse:
    """An in-flight HTTP/2 response whose body is read incrementally."""

    def __init__(self, conn: "ControlConn", stream_id: int, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.status = status
        self.headers = headers
        self._eof = False

    async def read(self) -> bytes:
        """Next body chunk; b"" at end of stream. Raises ControlTransportError if the conn dies."""
        if self._eof:
            return b""
        st = self._conn._streams.get(self.stream_id)
        if st is None:
            self._eof = True
            return b""
        chunk = await st.data.get()
        if chunk is None:
            self._eof = True
            self._conn._streams.pop(self.stream_id, None)
            if self._conn.closed_reason and not self._conn._stream_ended.get(self.stream_id):
                raise ControlTransportError(f"connection closed: {self._conn.closed_reason}")
            return b""
        self._conn._ack(self.stream_id, len(chunk))
        return chunk

    async def read_all(self, limit: int = 64 << 20) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
            if len(out) > limit:
                raise ControlTransportError(f"response body over {limit} bytes")
        return bytes(out)

    def close(self) -> None:
        self._conn._reset(self.stream_id)


class ControlConn:
    """One ts2021 connection: Noise over TCP, then HTTP/2 client. Use ``async with ControlConn.dial(...)``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        noise: NoiseConn,
        url: ServerURL,
        logger: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._noise = noise
        self._url = url
        self._log = logger
        self._early = EarlyPayloadParser()
        self._early_event = asyncio.Event()
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._streams: dict[int, _Stream] = {}
        self._stream_ended: dict[int, bool] = {}
        self._conn_window_waiters: list[asyncio.Future] = []
        self.closed_reason: str | None = None
        self._closed = asyncio.Event()
        self.early_noise: EarlyNoise | None = None
        self.bytes_in = 0

    # -- setup -------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def dial(
        cls,
        server_url: str,
        machine_key: MachinePrivate,
        control_key: MachinePublic,
        version: int,
        *,
        timeout: float = 15.0,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        socket_hook: SocketHook | None = None,
    ) -> AsyncIterator["ControlConn"]:
        log = logger or logging.getLogger("engine.control")
        url = ServerURL.parse(server_url)
        hs = ClientHandshake(machine_key, control_key, version)
        # Noise authenticates the server, so TLS (if any) is not verified
        reader, writer = await _open(url, timeout, verify_tls=False, socket_hook=socket_hook)
        try:
            try:
                writer.write(build_upgrade_request(url.authority, hs.initiation))
                await writer.drain()
                async with asyncio.timeout(timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
                check_upgrade_response(head[:-4])
                async with asyncio.timeout(timeout):
                    resp = await reader.readexactly(3)
                need = ClientHandshake.needed(resp)
                if need > 3:
                    async with asyncio.timeout(timeout):
                        resp += await reader.readexactly(need - 3)
            except asyncio.IncompleteReadError as e:
                raise ControlTransportError(
                    "control server closed the connection during the handshake (unsupported capability version?)"
                ) from e
            except (asyncio.LimitOverrunError, OSError, asyncio.TimeoutError) as e:
                raise ControlTransportError(f"upgrade: {str(e) or type(e).__name__}") from e
            try:
                noise = hs.receive_response(resp)
            except Exception as e:
                raise ControlTransportError(f"noise handshake: {e}") from e
            self = cls(reader, writer, noise, url, log)
            async with asyncio.TaskGroup() as tg:
                reader_task = tg.create_task(self._read_loop())
                try:
                    self._start_h2()
                    yield self
                finally:
                    self._shutdown("closed by client")
                    reader_task.cancel()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _start_h2(self) -> None:
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(H2_WINDOW)
        self._flush()

    # -- I/O ---------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.closed_reason is None:
            try:
                self._writer.write(self._noise.encrypt(data))
            except Exception as e:  # noqa: BLE001 - socket/noise failure kills the conn
                self._shutdown(f"write: {e}")

    def _shutdown(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._closed.set()
        self._early_event.set()
        for sid, st in self._streams.items():
            if not st.headers.done():
                st.headers.set_exception(ControlTransportError(f"connection closed: {reason}"))
            st.data.put_nowait(None)
            for w in st.window_waiters:
                if not w.done():
                    w.set_result(None)
        for w in self._conn_window_waiters:
            if not w.done():
                w.set_result(None)
        with contextlib.suppress(Exception):
            self._writer.close()

    async def _read_loop(self) -> None:
        try:
            while self.closed_reason is None:
                data = await self._reader.read(65536)
                if not data:
                    self._shutdown("EOF from control server")
                    return
                self.bytes_in += len(data)
                pt = self._noise.receive_data(data)
                if self._noise.failed:
                    self._shutdown(f"noise: {self._noise.failed}")
                    return
                if not pt:
                    continue
                if not self._early.done:
                    try:
                        self._early.feed(pt)
                    except RemoteProtocolError as e:
                        self._shutdown(str(e))
                        return
                    if not self._early.done:
                        continue
                    self.early_noise = self._early.early
                    self._early_event.set()
                    pt = self._early.rest
                    if not pt:
                        continue
                self._on_h2_data(pt)
        except (OSError, asyncio.IncompleteReadError) as e:
            self._shutdown(f"read: {e}")
        except asyncio.CancelledError:
            self._shutdown("cancelled")
            raise

    def _on_h2_data(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._flush()
            self._shutdown(f"http2: {e}")
            return
        for ev in events:
            sid = getattr(ev, "stream_id", None)
            st = self._streams.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and st:
                if not st.headers.done():
                    st.headers.set_result(dict(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                if st:
                    st.data.put_nowait(ev.data)
                else:
                    self._h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                if ev.flow_controlled_length and not ev.data:
                    self._ack(sid, ev.flow_controlled_length)
                elif st and ev.flow_controlled_length > len(ev.data):  # padding
                    self._ack(sid, ev.flow_controlled_length - len(ev.data))
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                if st:
                    self._stream_ended[sid] = isinstance(ev, h2.events.StreamEnded)
                    if not st.headers.done():
                        st.headers.set_exception(ControlTransportError(f"stream {sid} reset by server"))
                    st.data.put_nowait(None)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id == 0:
                    waiters, self._conn_window_waiters = self._conn_window_waiters, []
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
                elif st:
                    waiters, st.window_waiters = st.window_waiters, []
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._flush()
                self._shutdown(f"GOAWAY from server (error {ev.error_code})")
                return
        self._flush()

    def _ack(self, sid: int, n: int) -> None:
        if self.closed_reason is None and n:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self._h2.acknowledge_received_data(n, sid)
                self._flush()

    def _reset(self, sid: int) -> None:
        self._streams.pop(sid, None)
        if self.closed_reason is None:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self._h2.reset_stream(sid)
                self._flush()

    # -- API ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def wait_early_payload(self, timeout: float = 5.0) -> EarlyNoise | None:
        """The server's early payload (None if it sent none before HTTP/2)."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                await self._early_event.wait()
        return self.early_noise

    async def open_stream(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = 30.0,
    ) -> StreamResponse:
        """Send a request; returns once response headers arrive (body read via the StreamResponse)."""
        if self.closed_reason is not None:
            raise ControlTransportError(f"connection closed: {self.closed_reason}")
        sid = self._h2.get_next_available_stream_id()
        st = _Stream(headers=asyncio.get_running_loop().create_future())
        self._streams[sid] = st
        hdrs = [(":method", method), (":scheme", "https"), (":authority", self._url.authority), (":path", path)]
        if body:
            hdrs += [("content-type", "application/json"), ("content-length", str(len(body)))]
        hdrs += list((headers or {}).items())
        try:
            self._h2.send_headers(sid, hdrs, end_stream=not body)
            self._flush()
            if body:
                await self._send_body(sid, body)
            async with asyncio.timeout(timeout):
                got = await asyncio.shield(st.headers)
        except asyncio.TimeoutError:
            self._reset(sid)
            raise ControlTransportError(f"{method} {path}: no response within {timeout}s") from None
        except h2.exceptions.ProtocolError as e:
            self._reset(sid)
            raise ControlTransportError(f"{method} {path}: {e}") from e
        status = int(got.get(":status", "0"))
        return StreamResponse(self, sid, status, {k: v for k, v in got.items() if not k.startswith(":")})

    async def _send_body(self, sid: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            if self.closed_reason is not None:
                raise ControlTransportError(f"connection closed: {self.closed_reason}")
            window = min(self._h2.local_flow_control_window(sid), self._h2.max_outbound_frame_size)
            if window <= 0:
                fut = asyncio.get_running_loop().create_future()
                st = self._streams.get(sid)
                if st is None:
                    raise ControlTransportError(f"stream {sid} reset while sending")
                st.window_waiters.append(fut)
                self._conn_window_waiters.append(fut)
                await fut
                continue
            chunk, view = view[:window], view[window:]
            self._h2.send_data(sid, bytes(chunk), end_stream=not view)
            self._flush()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = 30.0,
        limit: int = 64 << 20,
    ) -> Response:
        """A complete request/response exchange."""
        resp = await self.open_stream(method, path, body, headers=headers, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                data = await resp.read_all(limit)
        except asyncio.TimeoutError:
            resp.close()
            raise ControlTransportError(f"{method} {path}: body not complete within {timeout}s") from None
        return Response(resp.status, resp.headers, data)
