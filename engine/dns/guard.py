"""MagicDNS admission: queries only via lo or the interface holding quad-100, and caps on TCP connections."""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Iterable

from engine.dns import netlink

REFRESH_MIN_INTERVAL = 1.0  # seconds between re-reads of the interface set (an unknown ifindex triggers one)
MAX_TCP_CONNS = 64  # open MagicDNS TCP connections in total
MAX_TCP_CONNS_PER_SOURCE = 8  # ... and per source address (dig, glibc and resolved use one or two)

WRONG_INTERFACE = "wrong-interface"
TCP_LIMIT_SOURCE = "tcp-conn-limit-source"
TCP_LIMIT_TOTAL = "tcp-conn-limit-total"


def _lo_index() -> int:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return 1


class ArrivalGuard:
    """Which arrivals a listener on `addrs` accepts: lo (this host) and the interfaces holding one of `addrs`.

    quad-100 sits on the TUN, so that is the TUN; a LAN neighbour routing 100.100.100.100 via us
    arrives on the LAN interface and is refused. UDP is checked by the arrival ifindex
    (IP_PKTINFO / IPV6_PKTINFO); TCP by the interface the replies would leave by (a handshake
    only completes where the SYN-ACK goes). When the kernel cannot be asked (no rtnetlink)
    the check is skipped: the nft input rules are the first line.
    """

    def __init__(
        self,
        addrs: Iterable[str],
        extra_ifaces: Iterable[str] = (),
        *,
        holders: Callable[[Iterable[str]], set[int]] = netlink.ifindexes_holding,
        route: Callable[[str], int | None] = netlink.route_oif,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.addrs = tuple(a for a in addrs if a not in ("", "0.0.0.0", "::"))
        self.extra_ifaces = tuple(extra_ifaces)
        self._holders, self._route, self._clock = holders, route, clock
        self._log = logger or logging.getLogger("meshvpn.dns.guard")
        self.allowed: set[int] = {_lo_index()}
        self._refreshed_at: float | None = None
        self.unavailable = False

    def refresh(self) -> None:
        self._refreshed_at = self._clock()
        allowed = {_lo_index()}
        for name in self.extra_ifaces:
            try:
                allowed.add(socket.if_nametoindex(name))
            except OSError:
                pass
        try:
            allowed |= self._holders(self.addrs) if self.addrs else set()
        except (OSError, ValueError) as e:
            if not self.unavailable:
                self._log.warning("cannot read interface addresses (%s): arriving-interface check off", e)
            self.unavailable = True
            return
        self.unavailable = False
        self.allowed = allowed

    def _maybe_refresh(self) -> bool:
        now = self._clock()
        if self._refreshed_at is not None and now - self._refreshed_at < REFRESH_MIN_INTERVAL:
            return False
        self.refresh()
        return True

    def ifindex_ok(self, ifindex: int | None) -> bool:
        """A UDP query that arrived on `ifindex` (None: the kernel said nothing, refused)."""
        if self.unavailable:
            return True
        if ifindex in self.allowed:
            return True
        return ifindex is not None and self._maybe_refresh() and ifindex in self.allowed

    def peer_ok(self, peer_ip: str) -> bool:
        """A TCP connection from `peer_ip`: allowed iff replies to it leave by an allowed interface."""
        if self.unavailable:
            return True
        try:
            oif = self._route(peer_ip)
        except (OSError, ValueError) as e:
            self._log.debug("route lookup for %s failed: %s", peer_ip, e)
            return False
        return self.ifindex_ok(oif)


class ConnLimiter:
    """Caps on concurrent connections, in total and per source address; refusals are the caller's to count."""

    def __init__(self, total: int = MAX_TCP_CONNS, per_source: int = MAX_TCP_CONNS_PER_SOURCE) -> None:
        self.total, self.per_source = total, per_source
        self.open: dict[str, int] = {}
        self.count = 0

    def acquire(self, source: str) -> str | None:
        """Take a slot for `source`; None when granted, else the refusal reason."""
        if self.open.get(source, 0) >= self.per_source:
            return TCP_LIMIT_SOURCE
        if self.count >= self.total:
            return TCP_LIMIT_TOTAL
        self.open[source] = self.open.get(source, 0) + 1
        self.count += 1
        return None

    def release(self, source: str) -> None:
        n = self.open.get(source, 0)
        if n <= 0:
            return
        self.count -= 1
        if n == 1:
            del self.open[source]
        else:
            self.open[source] = n - 1
