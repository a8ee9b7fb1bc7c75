"""peerAPI in the engine: the HTTP server on our tailnet addresses (DoH for exit-node clients), fed from netmaps."""

from __future__ import annotations

import logging
from typing import Any

from engine.net.tsaddr import EXIT_ROUTES


class PeerAPI:
    """The engine's PeerAPIServer: listens once the netmap gives us addresses; answers DNS via MagicDNS."""

    def __init__(self, system: Any, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self._system = system
        self.log = logger
        self.server: Any = None  # engine.peerapi.server.PeerAPIServer while running
        self._key: tuple | None = None

    async def start(self, dns: Any, self_name: str) -> None:
        srv = self._system.new_peerapi(dns, self_name, self.log.getChild("peerapi"))
        self.server = await srv.__aenter__()

    @property
    def ports(self) -> dict[str, int]:
        """Our address -> peerAPI port, for the listeners that are up."""
        return dict(self.server.ports) if self.server is not None else {}

    def services(self, dns_proxy: bool) -> tuple[dict, ...] | None:
        """Hostinfo.Services: peerapi4/peerapi6 ports of the listeners up, and peerapi-dns-proxy with MagicDNS."""
        from engine.peerapi import services

        return services(self.ports, dns_proxy=dns_proxy) or None

    def apply(self, nm: Any, routable_ips: tuple[str, ...], filt: Any) -> bool:
        """Listen on our tailnet addresses, refresh who may query; True if the listening addresses changed."""
        srv = self.server
        if srv is None or nm is None or nm.self_node is None:
            return False
        from engine.filter import ACCEPT
        from engine.peerapi import access_from_netmap
        from engine.peerapi.access import filter_internet_check

        offering = all(r in routable_ips for r in EXIT_ROUTES)
        d = nm.delta
        key = (id(nm.self_node), id(filt), offering)
        if key != self._key or d.full or d.changed or d.removed:
            srv.core.set_access(
                access_from_netmap(
                    nm, offering_exit=offering, internet_allowed=filter_internet_check(filt, ACCEPT) if filt else None
                )
            )
            self._key = key
        addrs = [a.split("/", 1)[0] for a in nm.self_node.addresses]
        if set(addrs) != set(srv.ports):
            srv.set_addresses(addrs)
            return True
        return False

    async def aclose(self) -> None:
        srv, self.server = self.server, None
        self._key = None
        if srv is not None:
            await srv.__aexit__(None, None, None)
