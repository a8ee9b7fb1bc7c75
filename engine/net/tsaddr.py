"""Tailnet address ranges, service addresses, the exit-route pair (tailscale's tsaddr): one definition for all."""

from __future__ import annotations

import ipaddress
from typing import Iterable

CGNAT_V4_TEXT = "100.64.0.0/10"  # tailnet IPv4 addresses (tsaddr.CGNATRange)
TAILNET_V6_TEXT = "fd7a:115c:a1e0::/48"  # tailnet IPv6 addresses (tsaddr.TailscaleULARange)
QUAD100_V4 = "100.100.100.100"  # MagicDNS / quad-100 service address
QUAD100_V6 = "fd7a:115c:a1e0::53"

CGNAT_V4 = ipaddress.ip_network(CGNAT_V4_TEXT)
TAILNET_V6 = ipaddress.ip_network(TAILNET_V6_TEXT)
TAILNET_RANGES = (CGNAT_V4, TAILNET_V6)
QUAD100_ADDRS = (QUAD100_V4, QUAD100_V6)
QUAD100_PREFIXES = (f"{QUAD100_V4}/32", f"{QUAD100_V6}/128")  # the service addresses as routes on the TUN
EXIT_ROUTES = ("0.0.0.0/0", "::/0")  # both default routes: what an exit node offers (tsaddr.ExitRoutes)


def is_tailnet_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address inside the tailnet ranges (either family)."""
    return any(ip in net for net in TAILNET_RANGES if ip.version == net.version)


def contains_exit_routes(prefixes: Iterable[str] | None) -> bool:
    """True if ``prefixes`` (canonical CIDR text) hold both default routes (tsaddr.ContainsExitRoutes)."""
    have = set(prefixes or ())
    return all(r in have for r in EXIT_ROUTES)


def canonical_routes(routes: Iterable[str] | str | None) -> tuple[str, ...]:
    """CIDRs (comma-separated text or an iterable) canonical and deduplicated; ValueError names the bad one."""
    if routes is None:
        return ()
    items = routes.split(",") if isinstance(routes, str) else list(routes)
    out: list[str] = []
    for r in items:
        r = str(r).strip()
        if not r:
            continue
        try:
            net = ipaddress.ip_network(r, strict=False)
        except ValueError:
            raise ValueError(f"{r!r} is not a CIDR prefix") from None
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)
