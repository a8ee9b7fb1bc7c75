"""Asyncio adapter forwarding raw DNS queries: UDP (TCP on truncation or for TCP clients) or DoH, by upstream kind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Callable

from engine.dns.config import AnyUpstream, DoHUpstream, Upstream
from engine.dns.doh import DoHClient, DoHError

_log = logging.getLogger("meshvpn.dns.forwarder")
UPSTREAM_TIMEOUT = 2.0  # seconds per upstream try; clients (dig: 5 s) retry themselves
MAX_REPLY_BYTES = 65535
MIN_UDP_PAYLOAD = 512  # RFC 1035 §4.2.1: a UDP reply without EDNS
_OPT = 41  # EDNS OPT pseudo-RR type (RFC 6891)

SocketHook = Callable[[socket.socket], None]


class Forwarder:
    """Sends a query to each upstream in turn until one answers; returns the raw reply or None.

    `socket_hook` is applied to every upstream socket before use (the daemon passes
    engine.router.exitnode.mark_socket so upstream DNS bypasses the exit-node table; tailnet
    addresses, such as an exit node's peerAPI DoH, still route through the TUN via table main).
    DoH upstreams go through `doh` (one pooled client; its own timeout, DOH_TIMEOUT).
    """

    def __init__(
        self, *, timeout: float = UPSTREAM_TIMEOUT, socket_hook: SocketHook | None = None, doh: DoHClient | None = None
    ) -> None:
        self._timeout = timeout
        self._hook = socket_hook
        self.doh = doh or DoHClient(socket_hook=socket_hook)
        self.errors = 0

    async def forward(self, query: bytes, upstreams: tuple[AnyUpstream, ...], *, tcp: bool = False) -> bytes | None:
        for up in upstreams:
            try:
                if isinstance(up, DoHUpstream):
                    reply = await self.doh.query(up, query)
                    if len(reply) >= 2:  # HTTP pairs request and reply; a server may zero the id (RFC 8484 §4.1)
                        reply = query[:2] + reply[2:]
                    if not tcp:
                        reply = mark_truncated_for_udp(reply, query)
                elif tcp:
                    async with asyncio.timeout(self._timeout):
                        reply = await self._tcp(query, up)
                else:
                    async with asyncio.timeout(self._timeout):
                        reply = await self._udp(query, up)
                    if reply is not None and len(reply) > 2 and reply[2] & 0x02:  # TC: retry over TCP
                        with contextlib.suppress(OSError, asyncio.TimeoutError):
                            async with asyncio.timeout(self._timeout):
                                full = await self._tcp(query, up)
                            if full is not None:
                                reply = full
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, DoHError) as e:
                self.errors += 1
                _log.debug("upstream %s failed: %s", up, e.__class__.__name__ if not str(e) else e)
                continue
            if reply is not None:
                return reply
        return None

    async def aclose(self) -> None:
        """Close pooled upstream connections (DoH keep-alives)."""
        await self.doh.aclose()

    def _socket(self, up: Upstream, kind: int) -> socket.socket:
        fam = socket.AF_INET6 if ":" in up.host else socket.AF_INET
        s = socket.socket(fam, kind)
        s.setblocking(False)
        if self._hook is not None:
            self._hook(s)
        return s

    async def _udp(self, query: bytes, up: Upstream) -> bytes | None:
        loop = asyncio.get_running_loop()
        with self._socket(up, socket.SOCK_DGRAM) as s:
            await loop.sock_connect(s, (up.host, up.port))
            await loop.sock_sendall(s, query)
            while True:  # a fresh socket per query: only our upstream can answer it; check the id anyway
                data = await loop.sock_recv(s, MAX_REPLY_BYTES)
                if len(data) >= 2 and data[:2] == query[:2]:
                    return data

    async def _tcp(self, query: bytes, up: Upstream) -> bytes | None:
        loop = asyncio.get_running_loop()
        with self._socket(up, socket.SOCK_STREAM) as s:
            await loop.sock_connect(s, (up.host, up.port))
            await loop.sock_sendall(s, struct.pack("!H", len(query)) + query)
            hdr = await _recv_exact(loop, s, 2)
            (n,) = struct.unpack("!H", hdr)
            return await _recv_exact(loop, s, n)


async def _recv_exact(loop: asyncio.AbstractEventLoop, s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(s, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)


def _udp_limit(query: bytes) -> int:
    """The reply size the client accepts over UDP: its EDNS payload size, else 512 (unparsable -> 512)."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", query, 4)
        off = 12
        for _ in range(qd):
            off = _skip_name(query, off) + 4
        for _ in range(an + ns):
            off = _skip_name(query, off) + 8
            off += 2 + struct.unpack_from("!H", query, off)[0]
        for _ in range(ar):
            off = _skip_name(query, off)
            rtype, rclass = struct.unpack_from("!HH", query, off)
            if rtype == _OPT:
                return max(MIN_UDP_PAYLOAD, rclass)
            off += 8
            off += 2 + struct.unpack_from("!H", query, off)[0]
    except (struct.error, IndexError):
        pass
    return MIN_UDP_PAYLOAD


def _skip_name(msg: bytes, off: int) -> int:
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def mark_truncated_for_udp(reply: bytes, query: bytes) -> bytes:
    """Set TC on a (DoH) reply larger than the UDP client accepts, so it retries over TCP (as tailscale does)."""
    if len(reply) < 12 or reply[2] & 0x02 or len(reply) <= _udp_limit(query):
        return reply
    return reply[:2] + bytes([reply[2] | 0x02]) + reply[3:]
