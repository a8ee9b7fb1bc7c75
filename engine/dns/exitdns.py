"""DNS through an exit node (pure): can a peer proxy DNS, and the DoH URL of its peerAPI ("http://ip:port/dns-query").

Facts (tailscale ipn/ipnlocal: peerCanProxyDNS, peerAPIPorts, peerAPIBase, exitNodeCanProxyDNS):

- a peer can proxy DNS when its capability version is >= 26 (the DoH handler came with 25), or,
  for a control server that sends no Cap, when its Hostinfo.Services list a "peerapi-dns-proxy"
  service with a port >= 1;
- its peerAPI ports are the "peerapi4" / "peerapi6" entries of Hostinfo.Services;
- the base URL is "http://<peer IPv4>:<peerapi4>" when we have an IPv4 address and the peer a
  peerapi4 port, else "http://[<peer IPv6>]:<peerapi6>" when we have IPv6 and it a peerapi6 port,
  else there is none. tailscale then still uses the bare path "/dns-query", which can never be
  reached; we return None and the caller resolves nothing by default (same outcome, no leak).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping

PROTO_PEERAPI4 = "peerapi4"
PROTO_PEERAPI6 = "peerapi6"
PROTO_PEERAPI_DNS = "peerapi-dns-proxy"
MIN_CAP_PEERAPI_DNS = 26  # tailcfg CapabilityVersion 25 added the peerAPI DoH proxy; >= 26 is certain
DOH_PATH = "/dns-query"


def field_of(obj: Any, attr: str, key: str) -> Any:
    """A field of a tailcfg dataclass (snake_case ``attr``) or of a JSON dict (Go name ``key``)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def _services(node: Any) -> list[tuple[str, int]]:
    """Hostinfo.Services as (proto, port); malformed entries are skipped."""
    out = []
    for s in field_of(field_of(node, "hostinfo", "Hostinfo"), "services", "Services") or ():
        proto, port = field_of(s, "proto", "Proto"), field_of(s, "port", "Port")
        if isinstance(proto, str) and isinstance(port, int) and not isinstance(port, bool) and 0 <= port < 65536:
            out.append((proto, port))
    return out


def peer_can_proxy_dns(node: Any) -> bool:
    """tailscale peerCanProxyDNS: Cap >= 26, or a peerapi-dns-proxy service (older control servers)."""
    if node is None:
        return False
    cap = field_of(node, "cap", "Cap")
    if isinstance(cap, int) and cap >= MIN_CAP_PEERAPI_DNS:
        return True
    return any(proto == PROTO_PEERAPI_DNS and port >= 1 for proto, port in _services(node))


def peer_api_ports(node: Any) -> tuple[int, int]:
    """(peerapi4 port, peerapi6 port) from Hostinfo.Services; 0 = not offered (the last entry wins)."""
    p4 = p6 = 0
    for proto, port in _services(node):
        if proto == PROTO_PEERAPI4:
            p4 = port
        elif proto == PROTO_PEERAPI6:
            p6 = port
    return p4, p6


def _single_ips(prefixes: Iterable[str] | None) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for p in prefixes or ():
        try:
            net = ipaddress.ip_network(str(p), strict=False)
        except ValueError:
            continue
        if net.num_addresses == 1:
            out.append(net.network_address)
    return out


def peer_api_base(self_addresses: Iterable[str], node: Any) -> str | None:
    """tailscale peerAPIBase: "http://ip:port" of the peer's peerAPI in a family we have, or None."""
    if node is None:
        return None
    mine = _single_ips(self_addresses)
    have4 = any(a.version == 4 for a in mine)
    have6 = any(a.version == 6 for a in mine)
    theirs = _single_ips(field_of(node, "addresses", "Addresses"))
    p4, p6 = peer_api_ports(node)
    if have4 and p4:
        ip4 = next((a for a in theirs if a.version == 4), None)
        return f"http://{ip4}:{p4}" if ip4 is not None else None
    if have6 and p6:
        ip6 = next((a for a in theirs if a.version == 6), None)
        return f"http://[{ip6}]:{p6}" if ip6 is not None else None
    return None


def exit_node_doh_url(self_addresses: Iterable[str], node: Any) -> str | None:
    """The exit node's DoH URL when it can proxy DNS and is reachable in one of our families, else None."""
    if not peer_can_proxy_dns(node):
        return None
    base = peer_api_base(self_addresses, node)
    return base + DOH_PATH if base else None


__all__ = [
    "peer_can_proxy_dns",
    "peer_api_ports",
    "peer_api_base",
    "exit_node_doh_url",
    "DOH_PATH",
    "PROTO_PEERAPI4",
    "PROTO_PEERAPI6",
    "PROTO_PEERAPI_DNS",
    "MIN_CAP_PEERAPI_DNS",
]
