"""The filter's local-destination routes: advertised routes, a default route shrunk to "guest Wi-Fi" (pure)."""

from __future__ import annotations

import ipaddress
from typing import Iterable, TypeVar, Union

from engine.net.tsaddr import TAILNET_RANGES

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_N = TypeVar("_N", ipaddress.IPv4Network, ipaddress.IPv6Network)

# Never local through a default route, even when an interface address lies inside
# (facts from tailscale ipn/ipnlocal removeFromDefaultRoute).
NEVER_VIA_DEFAULT: tuple[Network, ...] = tuple(
    ipaddress.ip_network(p)
    for p in (
        "192.168.0.0/16",
        "172.16.0.0/12",
        "10.0.0.0/8",  # RFC 1918
        "169.254.0.0/16",  # IPv4 link-local
        "224.0.0.0/4",  # IPv4 multicast
        "100.64.0.0/10",  # tailnet IPv4 range (CGNAT)
        "fe80::/10",  # IPv6 link-local
        "ff00::/8",  # IPv6 multicast
        "fd7a:115c:a1e0::/48",  # tailnet IPv6 range
    )
)
_TAILNET = TAILNET_RANGES


def subtract(nets: Iterable[Network], remove: Iterable[Network]) -> list[Network]:
    """The set difference nets - remove, as a collapsed list of networks (either family, mixed)."""
    out = list(nets)
    for r in remove:
        nxt: list[Network] = []
        for n in out:
            if isinstance(n, ipaddress.IPv4Network) and isinstance(r, ipaddress.IPv4Network):
                nxt.extend(_minus(n, r))
            elif isinstance(n, ipaddress.IPv6Network) and isinstance(r, ipaddress.IPv6Network):
                nxt.extend(_minus(n, r))
            else:  # different families
                nxt.append(n)
        out = nxt
    return _collapse(out)


def _minus(n: _N, r: _N) -> list[_N]:
    """n - r, both of one family."""
    if not n.overlaps(r):
        return [n]
    if n.subnet_of(r):
        return []  # entirely removed
    return list(n.address_exclude(r))  # n is a strict supernet of r (prefixes either nest or are disjoint)


def _collapse(nets: Iterable[Network]) -> list[Network]:
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def interface_routes(interface_prefixes: Iterable[str]) -> tuple[list[Network], list[Address]]:
    """Interface addresses ("198.51.100.2/24") -> (their subnets, the host addresses).

    Tailnet addresses and single-address prefixes (/32, /128) are skipped, as tailscale does.
    """
    subnets: list[Network] = []
    hosts: list[Address] = []
    for p in interface_prefixes:
        iface = ipaddress.ip_interface(str(p))
        net = iface.network
        if any(iface.ip in t for t in _TAILNET if t.version == iface.version):
            continue
        if net.num_addresses == 1:
            continue
        subnets.append(net)
        hosts.append(iface.ip)
    return _collapse(subnets), hosts


def shrink_default_route(route: str, interface_prefixes: Iterable[str]) -> list[Network]:
    """A default route minus the interface subnets, plus this host's own addresses, minus NEVER_VIA_DEFAULT."""
    r = ipaddress.ip_network(str(route), strict=False)
    subnets, hosts = interface_routes(interface_prefixes)
    nets = subtract([r], subnets)
    nets += [ipaddress.ip_network(h) for h in hosts if h.version == r.version and h in r]
    return subtract(_collapse(nets), NEVER_VIA_DEFAULT)


def local_routes(advertised_routes: Iterable[str], interface_prefixes: Iterable[str]) -> tuple[str, ...]:
    """Advertised routes as the filter's local destinations: /0 shrunk, others as given.

    A subnet advertised explicitly stays local even when it is an attached (interface) subnet.
    """
    out: list[str] = []
    prefixes = tuple(interface_prefixes)
    for route in advertised_routes:
        if ipaddress.ip_network(str(route), strict=False).prefixlen == 0:
            out += [str(n) for n in shrink_default_route(route, prefixes)]
        else:
            out.append(str(route))
    return tuple(out)
