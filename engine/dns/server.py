"""Asyncio MagicDNS server adapter: UDP and TCP listeners (100.100.100.100:53, fd7a:115c:a1e0::53) around the Resolver.

Admission (engine/dns/guard.py), counted in resolver.counters.drops: a UDP query must arrive
on lo or the interface holding the listen address (IP_PKTINFO / IPV6_PKTINFO), a TCP
connection must come from where its replies go back through such an interface
("wrong-interface"); TCP connections are capped per source and in total ("tcp-conn-limit-*");
forwarded queries, UDP and TCP together, are capped by MAX_INFLIGHT ("busy").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Iterable

from engine.dns.forwarder import Forwarder
from engine.dns.guard import (
    MAX_TCP_CONNS,
    MAX_TCP_CONNS_PER_SOURCE,
    WRONG_INTERFACE,
    ArrivalGuard,
    ConnLimiter,
)
from engine.dns.resolver import Drop, Forward, Reply, Resolver
from engine.net.freebind import bound_socket

MAX_INFLIGHT = 256  # concurrent forwarded queries (UDP and TCP); beyond that new ones are dropped (counted)
TCP_IDLE_TIMEOUT = 10.0
MAX_UDP_DATAGRAM = 65535
UDP_BATCH = 64  # datagrams read per wake-up before yielding to the loop
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # linux/in.h
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)  # linux/in6.h
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANC_SIZE = socket.CMSG_SPACE(32)


def pktinfo_ifindex(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The arrival interface from recvmsg's IP_PKTINFO / IPV6_PKTINFO (pure); None when absent."""
    for level, typ, data in ancdata:
        if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(data) >= 12:
            return struct.unpack_from("=i", data)[0]  # struct in_pktinfo: ipi_ifindex first
        if level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(data) >= 20:
            return struct.unpack_from("=I", data, 16)[0]  # struct in6_pktinfo: addr, then ifindex
    return None


class _UDP:
    """One UDP listener read with recvmsg, so that each query's arrival interface is known."""

    def __init__(self, server: "DNSServer", sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self._closing = False

    def _readable(self) -> None:
        for _ in range(UDP_BATCH):
            try:
                data, anc, _flags, addr = self.sock.recvmsg(MAX_UDP_DATAGRAM, _ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.server.resolver.counters.drop("udp-error")
                return
            self.server._on_udp(self, data, addr, pktinfo_ifindex(anc))

    def sendto(self, data: bytes, addr) -> None:
        if self._closing:
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.server.resolver.counters.drop("udp-send-busy")
        except OSError:
            self.server.resolver.counters.drop("udp-error")

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()


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
        interfaces: Iterable[str] = (),
        max_tcp_conns: int = MAX_TCP_CONNS,
        max_tcp_conns_per_source: int = MAX_TCP_CONNS_PER_SOURCE,
    ) -> None:
        """interfaces: names accepted besides lo and the interfaces holding `addresses` (guard.ArrivalGuard)."""
        self.resolver = resolver
        self.addresses = addresses
        self.forwarder = forwarder or Forwarder()
        self._log = logger or logging.getLogger("meshvpn.dns.server")
        self.guard = ArrivalGuard([h for h, _ in addresses], interfaces, logger=self._log)
        self.tcp_conns = ConnLimiter(max_tcp_conns, max_tcp_conns_per_source)
        self._udp: list[_UDP] = []
        self._tcp: list[asyncio.Server] = []
        self._tg: asyncio.TaskGroup | None = None
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.bound: list[tuple[str, int]] = []

    async def __aenter__(self) -> "DNSServer":
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            for host, port in self.addresses:
                s = bound_socket(host, port, socket.SOCK_DGRAM)
                port = s.getsockname()[1]
                try:
                    self._udp.append(_UDP(self, s))
                except BaseException:
                    s.close()
                    raise
                t = bound_socket(host, port, socket.SOCK_STREAM)
                t.listen(64)
                srv = await asyncio.start_server(self._on_tcp, sock=t)
                self._tcp.append(srv)
                self.bound.append((host, port))
        except BaseException:
            await self._close()
            raise
        await asyncio.to_thread(self.guard.refresh)
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
    def _on_udp(self, proto: _UDP, data: bytes, addr, ifindex: int | None = None) -> None:
        if not self.guard.ifindex_ok(ifindex):
            self.resolver.counters.drop(WRONG_INTERFACE)
            return
        action = self.resolver.handle(data, tcp=False)
        if isinstance(action, Reply):
            proto.sendto(action.wire, addr)
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
            if isinstance(out, Reply):
                proto.sendto(out.wire, addr)
        except Exception:
            self._log.debug("forward failed", exc_info=True)
        finally:
            self._inflight -= 1

    # -- TCP ------------------------------------------------------------------------------
    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        src = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        refusal = None if self.guard.peer_ok(src) else WRONG_INTERFACE
        if refusal is None:
            refusal = self.tcp_conns.acquire(src)
        if refusal is not None:
            self.resolver.counters.drop(refusal)
            writer.transport.abort()  # the descriptor goes at once, no lingering FIN_WAIT on our side
            return
        self._writers.add(writer)
        try:
            await self._serve_tcp(reader, writer)
        except Exception:
            self._log.debug("tcp client failed", exc_info=True)
        finally:
            self.tcp_conns.release(src)
            self._writers.discard(writer)
            writer.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                if self._inflight >= MAX_INFLIGHT:
                    self.resolver.counters.drop("busy")
                    return
                self._inflight += 1
                try:
                    reply = await self.forwarder.forward(action.query, action.upstreams, tcp=True)
                finally:
                    self._inflight -= 1
                action = self.resolver.finish_forward(action.query, reply)
            if isinstance(action, Drop):
                return  # junk on a stream: close it
            writer.write(struct.pack("!H", len(action.wire)) + action.wire)
            await writer.drain()
