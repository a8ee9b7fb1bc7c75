"""The WireGuard Device's Bind over magicsock: endpoints are peers' node keys, paths chosen per packet."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Protocol

from engine.dataplane.endpoint import UdpEndpoint
from engine.magicsock.constants import RX_QUEUE_MAX


class BindConn(Protocol):
    """What MagicBind needs of its MagicConn (keeps bind.py free of an import of conn.py)."""

    @property
    def port(self) -> int: ...

    def send_wireguard(self, parts: list, endpoint: object, seg: int = 0) -> None: ...

    def set_fwmark(self, mark: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerEndpoint:
    """A WireGuard endpoint meaning "whichever path magicsock picks for this node key"."""

    node_key: bytes

    def __str__(self) -> str:
        # tailscale writes the peer's hex node key as the WireGuard endpoint (wgcfg writer)
        return self.node_key.hex()


class MagicBind:
    """conn.Bind-like transport for engine.dataplane.Device (see engine/dataplane/bind.py).

    recv_into returns WireGuard datagrams from both the UDP socket and DERP; send routes
    to the peer's current best path. Thread-safe; used from the Device's worker threads.

    The receive queue holds at most `max_queue` items (a datagram or a GRO run): beyond it
    `deliver` drops and returns False, as a full socket buffer would. The check is qsize() on
    a C SimpleQueue, so with two producers (reader thread, DERP on the loop) it may overshoot
    by one item each; `peak` is the high-water mark.
    """

    def __init__(self, conn: BindConn, max_queue: int = RX_QUEUE_MAX) -> None:
        self._conn = conn
        self._rx: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.max_queue = max_queue
        self.peak = 0

    @property
    def port(self) -> int:
        return self._conn.port

    def open(self, port: int) -> int:
        """The socket belongs to magicsock; the Device gets its port (rebinding is not supported)."""
        if self._closed:
            self._rx = queue.SimpleQueue()
            self._closed = False
        return self._conn.port

    def deliver(self, data: bytes, endpoint: object, seg: int = 0) -> bool:
        """Called by magicsock (any thread) with a WireGuard datagram, or a GRO run of
        `seg`-byte datagrams, for the Device. False: dropped (queue full or closed)."""
        if self._closed:
            return False
        n = self._rx.qsize()
        if n >= self.max_queue:
            return False
        if n >= self.peak:
            self.peak = n + 1
        self._rx.put((data, endpoint, seg))
        return True

    def recv_into(self, buf, block: bool = True) -> tuple[int, int, object]:
        """(n, seg, endpoint); (0, 0, None) once closed; (-1, 0, None) if not block and empty."""
        if block:
            item = self._rx.get()
        else:
            try:
                item = self._rx.get_nowait()
            except queue.Empty:
                return -1, 0, None
        if item is None:
            self._rx.put(None)  # wake the other workers too
            return 0, 0, None
        data, ep, seg = item
        n = len(data)
        if n > len(buf):  # cannot happen with the Device's 64 KiB slots; keep whole datagrams
            n = (len(buf) // seg) * seg if seg else len(buf)
        buf[:n] = data[:n]
        return n, (seg or n), ep

    def send(self, parts: list, endpoint: object, seg: int = 0) -> None:
        self._conn.send_wireguard(parts, endpoint, seg)

    def parse_endpoint(self, text: str) -> object:
        t = text.strip()
        if len(t) == 64:
            try:
                return PeerEndpoint(bytes.fromhex(t))
            except ValueError:
                pass
        if t.startswith("nodekey:"):
            return PeerEndpoint(bytes.fromhex(t[8:]))
        return UdpEndpoint.parse(t)

    def set_fwmark(self, mark: int) -> None:
        self._conn.set_fwmark(mark)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._rx.put(None)
