"""DNS-over-HTTP(S) client (RFC 8484, POST) on asyncio + h11: pooled keep-alive connections, timeouts, counted errors.

    client = DoHClient(socket_hook=mark_socket)
    reply = await client.query(DoHUpstream(...), query_wire)     # raises DoHError (kind counted)
    await client.aclose()

Request, as tailscale's forwarder sends it (net/dns/resolver/forwarder.go sendDoH):

    POST <path> HTTP/1.1
    Host: <host>
    Content-Type: application/dns-message
    Accept: application/dns-message
    Content-Length: <n>
    User-Agent: meshvpn-dns
    <DNS query, id unchanged>

A reply counts only with status 200 and Content-Type application/dns-message. Connections are
kept per server and reused (HTTP/1.1 keep-alive, one request at a time each); an idle one is
closed after IDLE_TIMEOUT. A request on a reused connection that the server had already closed
(EOF / reset before any response byte) is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable

import h11

from engine.dns.config import DoHUpstream

DOH_CONTENT_TYPE = "application/dns-message"
DOH_TIMEOUT = 5.0  # seconds for one whole exchange (connect included); tailscale's TCP DNS timeout is 5 s
IDLE_TIMEOUT = 10.0  # seconds an unused connection is kept (tailscale dohIdleConnTimeout)
MAX_IDLE_PER_SERVER = 16  # idle keep-alive connections kept per DoH server (a burst of queries reuses them)
MAX_RESPONSE_BYTES = 65535  # a DNS message never exceeds this
READ_CHUNK = 65536
USER_AGENT = "meshvpn-dns"

SocketHook = Callable[[socket.socket], None]


class DoHError(Exception):
    """A DoH exchange failed; ``kind`` is the counter it was counted under."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class _Stale(Exception):
    """A reused connection turned out closed before any response byte arrived."""


@dataclass
class DoHCounters:
    requests: int = 0
    answers: int = 0
    connects: int = 0
    reused: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, detail: str = "") -> DoHError:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        return DoHError(kind, detail)


class _Conn:
    """One HTTP/1.1 connection: the h11 state machine plus its asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
        self.last_used = 0.0
        self.expiry: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        with contextlib.suppress(Exception):
            self.writer.close()


_Key = tuple[bool, str, int, tuple[str, ...]]


class DoHClient:
    """RFC 8484 POST client; see the module docstring. ``socket_hook`` is applied to every socket before connect."""

    def __init__(
        self,
        *,
        timeout: float = DOH_TIMEOUT,
        socket_hook: SocketHook | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self._timeout = timeout
        self._hook = socket_hook
        self._ssl = ssl_context
        self._clock = clock
        self._log = logger or logging.getLogger("meshvpn.dns.doh")
        self._idle: dict[_Key, list[_Conn]] = {}
        self._closed = False
        self.counters = DoHCounters()

    async def query(self, up: DoHUpstream, packet: bytes) -> bytes:
        """Send one DNS message, return the reply's bytes; DoHError on any failure (counted)."""
        if self._closed:
            raise DoHError("closed")
        self.counters.requests += 1
        try:
            async with asyncio.timeout(self._timeout):
                return await self._query(up, packet)
        except TimeoutError:
            raise self.counters.error("timeout", str(up)) from None

    async def _query(self, up: DoHUpstream, packet: bytes) -> bytes:
        key: _Key = (up.tls, up.host, up.port, up.addrs)
        for _attempt in range(2):
            conn, reused = self._take_idle(key), True
            if conn is None:
                conn, reused = await self._connect(up), False
            ok = False
            try:
                reply = await self._exchange(conn, up, packet, reused=reused)
                ok = True
            except _Stale:  # the server closed it while idle; its idle siblings are likely gone too
                self.counters.errors["stale"] = self.counters.errors.get("stale", 0) + 1
                for other in self._idle.pop(key, []):
                    other.close()
                continue
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                raise self.counters.error("transport", f"{up}: {e!r}") from None
            except h11.ProtocolError as e:
                raise self.counters.error("http", f"{up}: {e}") from None
            finally:
                if not ok:
                    conn.close()
            self._release(key, conn)
            self.counters.answers += 1
            return reply
        raise self.counters.error("transport", f"{up}: connection closed by the server")

    # -- connections ------------------------------------------------------------------------
    def _take_idle(self, key: _Key) -> _Conn | None:
        pool = self._idle.get(key)
        now = self._clock()
        while pool:
            conn = pool.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
            if now - conn.last_used < IDLE_TIMEOUT and not conn.reader.at_eof() and not conn.writer.is_closing():
                self.counters.reused += 1
                return conn
            conn.close()
        return None

    def _release(self, key: _Key, conn: _Conn) -> None:
        c = conn.h11
        if self._closed or c.our_state is not h11.DONE or c.their_state is not h11.DONE:
            conn.close()  # the server asked to close (Connection: close) or the exchange did not finish
            return
        c.start_next_cycle()
        pool = self._idle.setdefault(key, [])
        if len(pool) >= MAX_IDLE_PER_SERVER:
            conn.close()
            return
        conn.last_used = self._clock()
        conn.expiry = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._expire, key, conn)
        pool.append(conn)

    def _expire(self, key: _Key, conn: _Conn) -> None:
        conn.expiry = None
        pool = self._idle.get(key, [])
        if conn in pool:
            pool.remove(conn)
            conn.close()

    async def _connect(self, up: DoHUpstream) -> _Conn:
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for addr in up.addrs:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.setblocking(False)
                if self._hook is not None:
                    self._hook(s)
                await loop.sock_connect(s, (addr, up.port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ctx = None
                if up.tls:
                    ctx = self._ssl or ssl.create_default_context()
                reader, writer = await asyncio.open_connection(
                    sock=s, ssl=ctx, server_hostname=up.server_name if ctx is not None else None
                )
            except BaseException as e:
                s.close()
                if not isinstance(e, (OSError, ssl.SSLError)):
                    raise
                last = e
                continue
            self.counters.connects += 1
            return _Conn(reader, writer)
        raise self.counters.error("connect", f"{up}: {last!r}")

    # -- one exchange -------------------------------------------------------------------------
    async def _exchange(self, conn: _Conn, up: DoHUpstream, packet: bytes, *, reused: bool) -> bytes:
        c = conn.h11
        headers = [
            ("Host", up.host),
            ("Content-Type", DOH_CONTENT_TYPE),
            ("Accept", DOH_CONTENT_TYPE),
            ("Content-Length", str(len(packet))),
            ("User-Agent", USER_AGENT),
        ]
        out = c.send(h11.Request(method="POST", target=up.path, headers=headers))
        out += c.send(h11.Data(data=packet))
        out += c.send(h11.EndOfMessage())
        got_any = False
        try:
            conn.writer.write(out)
            await conn.writer.drain()
        except (ConnectionError, OSError):
            if reused:
                raise _Stale() from None
            raise
        status, ctype, body = 0, "", bytearray()
        while True:
            ev = c.next_event()
            if ev is h11.NEED_DATA:
                try:
                    chunk = await conn.reader.read(READ_CHUNK)
                except (ConnectionError, OSError):
                    if reused and not got_any:
                        raise _Stale() from None
                    raise
                if not chunk and reused and not got_any:
                    raise _Stale()
                got_any = got_any or bool(chunk)
                c.receive_data(chunk)  # b"" = EOF; h11 then reports the premature close
                continue
            if isinstance(ev, h11.InformationalResponse):
                continue
            if isinstance(ev, h11.Response):
                status = ev.status_code
                for name, value in ev.headers:
                    if name == b"content-type":
                        ctype = value.decode("latin-1").split(";", 1)[0].strip().lower()
                continue
            if isinstance(ev, h11.Data):
                body += ev.data
                if len(body) > MAX_RESPONSE_BYTES:
                    raise self.counters.error("body", f"{up}: reply larger than {MAX_RESPONSE_BYTES} bytes")
                continue
            if isinstance(ev, h11.EndOfMessage):
                break
            if isinstance(ev, h11.ConnectionClosed):
                raise self.counters.error("transport", f"{up}: closed before the reply ended")
        if status != 200:
            raise self.counters.error("status", f"{up}: HTTP {status}")
        if ctype != DOH_CONTENT_TYPE:
            raise self.counters.error("content-type", f"{up}: {ctype!r}")
        return bytes(body)

    async def aclose(self) -> None:
        """Close every idle connection; later queries raise DoHError("closed")."""
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()


__all__ = ["DoHClient", "DoHError", "DoHCounters", "DOH_CONTENT_TYPE", "DOH_TIMEOUT", "IDLE_TIMEOUT"]
