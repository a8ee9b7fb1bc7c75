"""Asyncio adapter that forwards raw DNS queries to upstream resolvers over UDP (TCP on truncation or for TCP clients)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Callable

from engine.dns.config import Upstream

UPSTREAM_TIMEOUT = 2.0  # seconds per upstream try; clients (dig: 5 s) retry themselves
MAX_REPLY_BYTES = 65535

SocketHook = Callable[[socket.socket], None]


class Forwarder:
    """Sends a query to each upstream in turn until one answers; returns the raw reply or None.

    `socket_hook` is applied to every upstream socket before use (the daemon passes
    engine.router.exitnode.mark_socket so upstream DNS bypasses the exit-node table).
    """

    def __init__(self, *, timeout: float = UPSTREAM_TIMEOUT, socket_hook: SocketHook | None = None) -> None:
        self._timeout = timeout
        self._hook = socket_hook
        self.errors = 0

    async def forward(self, query: bytes, upstreams: tuple[Upstream, ...], *, tcp: bool = False) -> bytes | None:
        for up in upstreams:
            try:
                if tcp:
                    reply = await asyncio.wait_for(self._tcp(query, up), self._timeout)
                else:
                    reply = await asyncio.wait_for(self._udp(query, up), self._timeout)
                    if reply is not None and len(reply) > 2 and reply[2] & 0x02:  # TC: retry over TCP
                        with contextlib.suppress(OSError, asyncio.TimeoutError):
                            full = await asyncio.wait_for(self._tcp(query, up), self._timeout)
                            if full is not None:
                                reply = full
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                self.errors += 1
                continue
            if reply is not None:
                return reply
        return None

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
