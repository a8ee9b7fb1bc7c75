"""The engine's inbound packet filter: rebuilt from the netmap's rules and prefs only when its inputs change."""

from __future__ import annotations

import logging
from typing import Any, Callable


class PacketFilter:
    """Builds engine.filter.Filter for netmaps and installs it in the TUN (FilterTun.set_filter)."""

    def __init__(
        self, read_iface_prefixes: Callable[[], tuple[str, ...]], logger: logging.Logger | logging.LoggerAdapter
    ) -> None:
        self._read_ifaces = read_iface_prefixes
        self.log = logger
        self.tun: Any = None  # where the filter goes (None: keep it only, e.g. before the TUN exists)
        self.filter: Any = None  # the filter in force, None before the first apply
        self._key: tuple | None = None
        self.iface_prefixes: tuple[str, ...] | None = None  # this host's interface prefixes (read when needed)

    def apply(
        self,
        nm: Any,
        *,
        shields_up: bool,
        routable_ips: tuple[str, ...],
        offers_default_route: bool,
        open_tcp: dict[str, int],
    ) -> None:
        """The filter for ``nm`` (None: AllowNone, nothing inbound accepted); no-op when nothing it uses changed."""
        from engine.filter import Filter
        from engine.filter.localnets import local_routes

        if nm is None or nm.self_node is None:
            pf, addrs = None, ()
        else:
            pf, addrs = nm.packet_filter, tuple(nm.self_node.addresses)
            if shields_up:
                pf = ()  # no rules: new inbound connections are dropped, replies still pass
        ifaces: tuple[str, ...] = ()
        if pf is not None and offers_default_route:
            # offering an exit node: the default routes are local minus the attached subnets ("guest Wi-Fi");
            # read once here, then refreshed off the loop by refresh_ifaces (not on every netmap)
            if self.iface_prefixes is None:
                self.iface_prefixes = self._read_ifaces()
            ifaces = self.iface_prefixes
        # like tailscale, our peerAPI ports are open to every peer whatever the ACL (its access rules apply at L7)
        tcp = tuple(sorted(open_tcp.items()))
        key = (pf, addrs, routable_ips, ifaces, tcp)  # by value: headscale resends the same rules with many updates
        if key == self._key:
            return
        f, errors = Filter.for_netmap(pf, addrs, local_routes(routable_ips, ifaces), prev=self.filter, open_tcp=tcp)
        for e in errors:
            self.log.warning("packet filter: %s", e)
        self._key = key
        self.filter = f
        if self.tun is not None:
            self.tun.set_filter(f)
        self.log.info("packet filter: %s", "allow-none" if pf is None else f"{len(f.matches)} rules")

    def doc(self) -> dict | None:
        """The "Filter" object of the debug document."""
        f = self.filter
        if f is None:
            return None
        return {
            "Rules": len(f.matches),
            "AcceptedIn": f.accepted_in,
            "Drops": {r.value: n for r, n in f.drops.items() if n},
        }
