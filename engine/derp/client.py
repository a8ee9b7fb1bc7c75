"""Asyncio DERP client for one region: dial (HTTP or TLS), run the sans-IO core, reconnect with backoff."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random as _random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import nacl.public

from engine.derp import protocol as p
from engine.derp.derpmap import DerpNode, DerpRegion

BACKOFF_MIN = 0.25  # seconds
BACKOFF_MAX = 10.0
DIAL_TIMEOUT = 10.0
READ_CHUNK = 64 << 10
PENDING_MAX = 64  # packets held while the connection is being established


@dataclass
class DerpClientStatus:
    region_id: int
    connected: bool
    node: str
    server_key: str
    connects: int
    reconnects: int
    malformed: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    last_error: str
    health: str
    preferred: bool


class DerpClient:
    """A self-reconnecting DERP connection to one region; use as `async with`.

    `on_event(region_id, event)` receives every core event (PacketReceived, PeerGoneEvent, ...)
    on the event loop. `send_packet` is non-blocking and loop-thread only.
    """

    def __init__(
        self,
        region: DerpRegion,
        private_key: nacl.public.PrivateKey,
        on_event: Callable[[int, p.Event], None],
        *,
        use_http: bool = False,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
        backoff_min: float = BACKOFF_MIN,
        backoff_max: float = BACKOFF_MAX,
        fwmark: int = 0,
    ) -> None:
        self.region = region
        self._key = private_key
        self._on_event = on_event
        self._use_http = use_http
        self._log = logger or logging.getLogger("engine.derp")
        self._clock = clock
        self._random = random
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self.fwmark = fwmark  # SO_MARK for the TCP connection (0 = none); applies from the next dial
        self._conn: p.DerpClientConn | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._preferred = False
        self._node: DerpNode | None = None
        self.connects = 0
        self.reconnects = 0
        self.malformed = 0
        self.last_error = ""
        self.health = ""
        self._totals = p.DerpCounters()
        self._pending: list[tuple[bytes, bytes]] = []

    # ---- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> "DerpClient":
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self.run(), name=f"derp-{self.region.region_id}")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop reconnecting and drop the connection; `run()` then returns."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def run(self) -> None:
        """The reconnect loop; run it inside the owner's TaskGroup (or use `async with`)."""
        if self._task is None:
            self._task = asyncio.current_task()
        await self._run()

    # ---- API ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state is p.State.CONNECTED

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    def send_packet(self, dst: bytes, packet: bytes) -> bool:
        """Send a packet to `dst` (node public key). While (re)connecting, up to PENDING_MAX
        packets wait and go out right after login; beyond that they are dropped (False)."""
        conn = self._conn
        if conn is None or conn.state is not p.State.CONNECTED:
            if self._closing or len(self._pending) >= PENDING_MAX:
                self._totals.dropped_not_connected += 1
                return False
            self._pending.append((dst, packet))
            return True
        conn.send_packet(dst, packet)
        self._flush()
        return True

    def note_preferred(self, preferred: bool) -> None:
        """Tell the server whether this is our home region (sent again after each reconnect)."""
        self._preferred = preferred
        if self.connected:
            self._conn.note_preferred(preferred)
            self._flush()

    def send_ping(self, data: bytes) -> None:
        if self.connected:
            self._conn.send_ping(data)
            self._flush()

    def status(self) -> DerpClientStatus:
        c = self._conn.counters if self._conn else p.DerpCounters()
        t = self._totals
        return DerpClientStatus(
            region_id=self.region.region_id,
            connected=self.connected,
            node=self._node.name if self._node else "",
            server_key=(self._conn.server_key or b"").hex()[:16] if self._conn else "",
            connects=self.connects,
            reconnects=self.reconnects,
            malformed=self.malformed,
            packets_in=t.packets_in + c.packets_in,
            packets_out=t.packets_out + c.packets_out,
            bytes_in=t.bytes_in + c.bytes_in,
            bytes_out=t.bytes_out + c.bytes_out,
            last_error=self.last_error,
            health=self.health,
            preferred=self._preferred,
        )

    # ---- internals ----------------------------------------------------------------------

    def _flush(self) -> None:
        if self._conn is None or self._writer is None:
            return
        out = self._conn.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    async def _run(self) -> None:
        backoff = self._backoff_min
        attempt = 0
        while not self._closing:
            nodes = self.region.derp_nodes()
            if not nodes:
                self.last_error = "region has no DERP nodes"
                await asyncio.sleep(self._backoff_max)
                continue
            node = nodes[attempt % len(nodes)]
            attempt += 1
            delay = None
            try:
                delay = await self._session(node)
                backoff = self._backoff_min  # a session that got connected resets backoff
            except (OSError, asyncio.TimeoutError, ssl.SSLError, EOFError) as e:
                self.last_error = f"{e.__class__.__name__}: {e}"
                self._log.debug("derp region %d: %s", self.region.region_id, self.last_error)
            finally:
                self._connected.clear()
                if self._conn is not None:
                    self._accumulate(self._conn.counters)
                    if self._conn.state is not p.State.CLOSED:
                        ev = self._conn.close("connection lost")
                        if ev is not None:
                            self._on_event(self.region.region_id, ev)
                self._conn = None
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            if self._closing:
                break
            self.reconnects += 1
            if delay is None:
                delay = backoff * (0.5 + _random.random())
                backoff = min(backoff * 2, self._backoff_max)
            await asyncio.sleep(delay)

    def _accumulate(self, c: p.DerpCounters) -> None:
        t = self._totals
        t.packets_in += c.packets_in
        t.packets_out += c.packets_out
        t.bytes_in += c.bytes_in
        t.bytes_out += c.bytes_out

    async def _dial(self, host: str, port: int, ctx, server_hostname):
        if not self.fwmark:
            return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname)
        # SO_MARK before connect, so DERP never routes into our own tunnel (exit-node table 52)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _t, proto, _c, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.fwmark)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=server_hostname)

    async def _session(self, node: DerpNode) -> float | None:
        """One connection; returns a server-advised reconnect delay or None."""
        self._node = node
        host = node.dial_host()
        port = node.derp_port_for(self._use_http)
        ctx = None
        server_hostname = None
        if not self._use_http:
            ctx = ssl.create_default_context()
            if node.insecure_for_tests or node.cert_name.startswith("sha256-raw:"):
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            server_hostname = node.host_name or host
        async with asyncio.timeout(DIAL_TIMEOUT):
            reader, writer = await self._dial(host, port, ctx, server_hostname)
        self._writer = writer
        if ctx is not None and node.cert_name.startswith("sha256-raw:"):
            # DERPNode.CertName "sha256-raw:<hex>" pins the server's self-signed certificate
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
            got = hashlib.sha256(der).hexdigest()
            if not hmac.compare_digest(got, node.cert_name[len("sha256-raw:") :].lower()):
                raise ssl.SSLError(f"DERP server certificate does not match pinned {node.cert_name[:24]}…")
        conn = p.DerpClientConn(private_key=self._key, host=node.host_name or host, random=self._random)
        self._conn = conn
        conn.start(self._clock())
        self._flush()
        advised: float | None = None
        while True:
            deadline = conn.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(READ_CHUNK)
            except asyncio.TimeoutError:
                events = conn.handle_timer(self._clock())
                data = None
            else:
                if not data:
                    raise EOFError("server closed the connection")
                events = conn.receive_data(data, self._clock())
            self._flush()
            for ev in events:
                if isinstance(ev, p.Connected):
                    self.connects += 1
                    self.last_error = ""
                    self._connected.set()
                    if self._preferred:
                        conn.note_preferred(True)
                    pending, self._pending = self._pending, []
                    for dst, pkt in pending:
                        conn.send_packet(dst, pkt)
                    self._flush()
                    self._log.debug("derp region %d connected to %s", self.region.region_id, node.name)
                elif isinstance(ev, p.HealthEvent):
                    self.health = ev.problem
                elif isinstance(ev, p.RestartingEvent):
                    advised = ev.reconnect_in
                elif isinstance(ev, p.Closed):
                    if ev.malformed:
                        self.malformed += 1
                    self.last_error = ev.reason
                self._on_event(self.region.region_id, ev)
            if conn.state is p.State.CLOSED:
                return advised
            await writer.drain()
