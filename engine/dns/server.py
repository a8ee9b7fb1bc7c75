"""Asyncio MagicDNS server adapter: UDP + TCP listeners (100.100.100.100:53, fd7a:115c:a1e0::53) around the Resolver core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from engine.dns.forwarder import Forwarder
from engine.dns.resolver import Drop, Forward, Reply, Resolver
from engine.freebind import bound_socket

MAX_INFLIGHT = 256  # concurrent forwarded queries; beyond that new ones are dropped (counted)
TCP_IDLE_TIMEOUT = 10.0
MAX_UDP_DATAGRAM = 65535


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: "DNSServer") -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.server._on_udp(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        self.server.resolver.counters.drop("udp-error")


class DNSServer:
    """Serves a Resolver on the given addresses. Use as `async with DNSServer(...)`.

    Lifecycle: __aenter__ binds every listener (raises OSError if one fails), __aexit__
    closes them and cancels in-flight forwards. Background work lives in the server's TaskGroup.
    """

    def __init__(
        self,
        resolver: Resolver,
        addresses: list[tuple[str, int]],
        *,
        forwarder: Forwarder | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.resolver = resolver
        self.addresses = addresses
        self.forwarder = forwarder or Forwarder()
        self._log = logger or logging.getLogger("meshvpn.dns.server")
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tg: asyncio.TaskGroup | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.bound: list[tuple[str, int]] = []

    async def __aenter__(self) -> "DNSServer":
        loop = asyncio.get_running_loop()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            for host, port in self.addresses:
                s = bound_socket(host, port, socket.SOCK_DGRAM)
                port = s.getsockname()[1]
                tr, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), sock=s)
                self._udp.append(tr)
                t = bound_socket(host, port, socket.SOCK_STREAM)
                t.listen(64)
                srv = await asyncio.start_server(self._on_tcp, sock=t)
                self._tcp.append(srv)
                self.bound.append((host, port))
        except BaseException:
            await self._close()
            raise
        self._log.info("MagicDNS listening on %s", ", ".join(f"{h}:{p}" for h, p in self.bound))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close()

    async def _close(self) -> None:
        for tr in self._udp:
            tr.close()
        for srv in self._tcp:
            srv.close()
        for srv in self._tcp:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self._udp, self._tcp = [], []
        for w in list(self._writers):
            w.close()
        tg, self._tg = self._tg, None
        if tg is not None:
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(BaseException):
                await tg.__aexit__(None, None, None)

    async def answer(self, query: bytes) -> bytes | None:
        """Answer one query as quad-100 would (for the peerAPI's DNS-over-HTTP); None if the resolver drops it.

        Stream semantics (no truncation of local answers); forwarded over UDP, TCP on truncation.
        """
        action = self.resolver.handle(query, tcp=True)
        if isinstance(action, Forward):
            reply = await self.forwarder.forward(action.query, action.upstreams)
            action = self.resolver.finish_forward(action.query, reply)
        return action.wire if isinstance(action, Reply) else None

    # -- UDP ------------------------------------------------------------------------------
    def _on_udp(self, proto: _UDP, data: bytes, addr) -> None:
        action = self.resolver.handle(data, tcp=False)
        if isinstance(action, Reply):
            proto.transport.sendto(action.wire, addr)
        elif isinstance(action, Forward):
            if self._tg is None or self._inflight >= MAX_INFLIGHT:
                self.resolver.counters.drop("busy")
                return
            self._inflight += 1
            task = self._tg.create_task(self._forward_udp(proto, action, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, proto: _UDP, action: Forward, addr) -> None:
        try:
            reply = await self.forwarder.forward(action.query, action.upstreams)
            out = self.resolver.finish_forward(action.query, reply)
            if isinstance(out, Reply) and proto.transport is not None and not proto.transport.is_closing():
                proto.transport.sendto(out.wire, addr)
        except Exception:
            self._log.debug("forward failed", exc_info=True)
        finally:
            self._inflight -= 1

    # -- TCP ------------------------------------------------------------------------------
    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        hdr = await reader.readexactly(2)
                    (n,) = struct.unpack("!H", hdr)
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        data = await reader.readexactly(n)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                action = self.resolver.handle(data, tcp=True)
                if isinstance(action, Forward):
                    reply = await self.forwarder.forward(action.query, action.upstreams, tcp=True)
                    action = self.resolver.finish_forward(action.query, reply)
                if isinstance(action, Drop):
                    return  # junk on a stream: close it
                writer.write(struct.pack("!H", len(action.wire)) + action.wire)
                await writer.drain()
        except Exception:
            self._log.debug("tcp client failed", exc_info=True)
        finally:
            self._writers.discard(writer)
            writer.close()
