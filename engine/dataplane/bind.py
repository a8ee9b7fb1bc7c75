"""UDP "Bind": the Device's datagram transport (kernel UDP socket with GSO/GRO, or an in-memory pair).

The ``Bind`` interface (wireguard-go's conn.Bind, adapted to batching from Python):

- ``open(port) -> int``: bind (0 = any port); returns the actual port. May be called again to rebind.
- ``recv_into(buf, block=True) -> (n, seg, endpoint)``: wait for a batch: ``buf[:n]`` holds
  datagrams of ``seg`` bytes each (the last may be shorter), all from ``endpoint``.
  Returns ``(0, 0, None)`` once closed, ``(-1, 0, None)`` if ``block`` is False and nothing waits.
- ``send(parts, endpoint, seg=0)``: ``seg == 0``: each element of ``parts`` is one datagram;
  ``seg > 0``: the concatenation of ``parts`` is a run of datagrams of ``seg`` bytes (the last
  may be shorter), sent with one UDP GSO ``sendmsg`` where the kernel supports it.
- ``parse_endpoint(text)``, ``set_fwmark(mark)``, ``close()`` (idempotent), ``port``.

Endpoints are hashable value objects (``UdpEndpoint`` here); other binds (magicsock) can use
their own, e.g. keyed by the peer's public key, as long as they are hashable and printable.
"""

from __future__ import annotations

import errno
import os
import queue
import select
import socket
import threading
from typing import Protocol

from engine.dataplane.endpoint import UdpEndpoint

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOCKET_BUFFER = 7 << 20  # wireguard-go's 7 MiB: avoids drops at line rate
UDP_MAX_GSO_BYTES = 65000  # a GSO send must stay below 64 KiB of UDP payload
UDP_MAX_SEGMENTS = 64
_CMSG_SPACE = socket.CMSG_SPACE(4)


class Bind(Protocol):
    port: int

    def open(self, port: int) -> int: ...
    def recv_into(self, buf: bytearray | memoryview, block: bool = True) -> tuple[int, int, object]: ...
    def send(self, parts: list, endpoint: object, seg: int = 0) -> None: ...
    def parse_endpoint(self, text: str) -> object: ...
    def set_fwmark(self, mark: int) -> None: ...
    def close(self) -> None: ...


class UdpBind:
    """A dual-stack UDP socket (``::`` with IPV6_V6ONLY off, IPv4 fallback), GSO/GRO when available."""

    def __init__(self, *, gso: bool = True, gro: bool = True) -> None:
        self.port = 0
        self._sock: socket.socket | None = None
        self._family = socket.AF_INET6
        self._want_gso = gso
        self._want_gro = gro
        self.gso = False
        self.gro = False
        self._fwmark = 0
        self._closed = False
        self._lock = threading.Lock()
        self._ep_cache: dict[tuple, UdpEndpoint] = {}
        self._addr_cache: dict[object, tuple] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll: select.poll | None = None

    # -- setup ---------------------------------------------------------------------------
    def open(self, port: int) -> int:
        with self._lock:
            if self._closed:
                raise RuntimeError("bind closed")
            old = self._sock
            sock = self._make_socket(port)
            self._sock = sock
            self.port = sock.getsockname()[1]
            poll = select.poll()
            poll.register(sock.fileno(), select.POLLIN)
            poll.register(self._wake_r, select.POLLIN)
            self._poll = poll
            if old is not None:
                self._wake()
                old.close()
            return self.port

    def _make_socket(self, port: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._family = socket.AF_INET6
            addr: tuple = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._family = socket.AF_INET
            addr = ("0.0.0.0", port)
        try:
            for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            if self._fwmark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self._fwmark)
            sock.bind(addr)
            self.gso = False
            if self._want_gso:
                try:
                    sock.getsockopt(SOL_UDP, UDP_SEGMENT)
                    self.gso = True
                except OSError:
                    self.gso = False
            self.gro = False
            if self._want_gro:
                try:
                    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                    self.gro = True
                except OSError:
                    self.gro = False
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._addr_cache.clear()
        return sock

    def set_fwmark(self, mark: int) -> None:
        with self._lock:
            self._fwmark = mark
            if self._sock is not None:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)

    def parse_endpoint(self, text: str) -> UdpEndpoint:
        return UdpEndpoint.parse(text)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake()
            if self._sock is not None:
                self._sock.close()

    # -- data path -----------------------------------------------------------------------
    def recv_into(self, buf: bytearray | memoryview, block: bool = True) -> tuple[int, int, object]:
        while True:
            sock = self._sock
            if self._closed or sock is None:
                return 0, 0, None
            try:
                n, anc, _flags, addr = sock.recvmsg_into([buf], _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                if not block:
                    return -1, 0, None
                self._poll.poll()
                if self._closed:
                    return 0, 0, None
                try:
                    os.read(self._wake_r, 64)  # drain a rebind wakeup
                except OSError:
                    pass
                continue
            except OSError as e:
                if self._closed or e.errno == errno.EBADF:
                    return 0, 0, None
                if sock is not self._sock:
                    continue  # rebound while we were in the call
                # ICMP errors (ECONNREFUSED etc.) surface here on Linux; ignore them.
                continue
            seg = n
            if anc:
                for level, typ, data in anc:
                    if level == SOL_UDP and typ == UDP_GRO:
                        seg = int.from_bytes(data[:4], "little") or n
            ep = self._ep_cache.get(addr)
            if ep is None:
                if len(self._ep_cache) > 4096:
                    self._ep_cache.clear()
                ep = self._ep_cache[addr] = UdpEndpoint.from_sockaddr(addr)
            return n, seg, ep

    def _sockaddr(self, endpoint: object) -> tuple:
        addr = self._addr_cache.get(endpoint)
        if addr is None:
            addr = endpoint.sockaddr(self._family)  # type: ignore[attr-defined]
            if len(self._addr_cache) > 4096:
                self._addr_cache.clear()
            self._addr_cache[endpoint] = addr
        return addr

    def send(self, parts: list, endpoint: object, seg: int = 0) -> None:
        sock = self._sock
        if sock is None:
            raise OSError(errno.ENOTCONN, "bind not open")
        addr = self._sockaddr(endpoint)
        if seg:
            if self.gso:
                try:
                    self._sendmsg(sock, parts, [(SOL_UDP, UDP_SEGMENT, seg.to_bytes(2, "little"))], addr)
                    return
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    self.gso = False  # no checksum offload on the egress device: fall back for good
            data = b"".join(parts)
            for off in range(0, len(data), seg):
                self._sendmsg(sock, [data[off : off + seg]], (), addr)
        else:
            for p in parts:
                self._sendmsg(sock, [p], (), addr)

    def _sendmsg(self, sock: socket.socket, parts: list, anc, addr: tuple) -> None:
        for _ in range(1000):
            try:
                sock.sendmsg(parts, anc, 0, addr)
                return
            except BlockingIOError:
                # Socket buffer full: wait until it drains instead of dropping.
                select.select([], [sock], [], 0.1)
        raise OSError(errno.ENOBUFS, "UDP send buffer stayed full")


class MemoryBind:
    """One end of an in-memory datagram link; ``MemoryBind.pair()`` makes two connected ends.

    Endpoints are ``UdpEndpoint``s in 192.0.2.0/24 (documentation range) so roaming can be tested
    by ``rebind_source``. Raises unless MESH_TESTING=1.
    """

    def __init__(self, addr: UdpEndpoint) -> None:
        if os.environ.get("MESH_TESTING") != "1":
            raise RuntimeError("MemoryBind is a test fake; set MESH_TESTING=1")
        self.addr = addr
        self.port = addr.port
        self.peer: MemoryBind | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._closed = False
        self.sent: list[tuple[bytes, object]] = []  # last datagrams sent (for tests), bounded
        self.drop_outgoing = False
        self.fwmark = 0

    @classmethod
    def pair(cls) -> tuple["MemoryBind", "MemoryBind"]:
        a = cls(UdpEndpoint.parse("192.0.2.1:51820"))
        b = cls(UdpEndpoint.parse("192.0.2.2:51820"))
        a.peer, b.peer = b, a
        return a, b

    def open(self, port: int) -> int:
        if port:
            self.addr = UdpEndpoint(self.addr.ip, port)
            self.port = port
        return self.port

    def rebind_source(self, new: UdpEndpoint) -> None:
        """Pretend our address changed (NAT rebinding / roaming)."""
        self.addr = new
        self.port = new.port

    def inject(self, datagram: bytes, source: object) -> None:
        """Deliver ``datagram`` as if ``source`` had sent it to us."""
        self._inbox.put((bytes(datagram), source))

    def recv_into(self, buf: bytearray | memoryview, block: bool = True) -> tuple[int, int, object]:
        if block:
            item = self._inbox.get()
        else:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return -1, 0, None
        if item is None or self._closed:
            self._inbox.put(None)
            return 0, 0, None
        data, src = item
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n, n, src

    def send(self, parts: list, endpoint: object, seg: int = 0) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "closed")
        if seg:
            data = b"".join(bytes(p) for p in parts)
            dgrams = [data[o : o + seg] for o in range(0, len(data), seg)]
        else:
            dgrams = [bytes(p) for p in parts]
        for d in dgrams:
            self.sent.append((d, endpoint))
            if len(self.sent) > 1000:
                del self.sent[:500]
            peer = self.peer
            if self.drop_outgoing or peer is None or peer._closed:
                continue
            if endpoint != peer.addr:
                continue  # nobody at that address
            peer._inbox.put((d, self.addr))

    def parse_endpoint(self, text: str) -> UdpEndpoint:
        return UdpEndpoint.parse(text)

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
