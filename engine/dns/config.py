"""MagicDNS configuration: the pure mapping from netmap (self node, peers, DNSConfig) to what quad-100 answers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

QUAD100_V4 = "100.100.100.100"
QUAD100_V6 = "fd7a:115c:a1e0::53"
CGNAT_V4 = ipaddress.ip_network("100.64.0.0/10")
TAILNET_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")
# Reverse zones answered locally when MagicDNS is on (tailscale magicDNSRootDomains).
REVERSE_ZONES = ("0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.",) + tuple(f"{i}.100.in-addr.arpa." for i in range(64, 128))
CAP_MAGICDNS_AAAA = "magicdns-aaaa"  # self CapMap key: include peers' IPv6 even when we have IPv4
DNS_PORT = 53


def fqdn(name: str) -> str:
    """Lower-case, trailing-dot form used as dictionary key everywhere."""
    n = name.strip().lower()
    return n if n.endswith(".") else n + "."


@dataclass(frozen=True, slots=True)
class Upstream:
    """A plain-DNS upstream resolver (UDP, TCP fallback)."""

    host: str
    port: int = DNS_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_upstream(addr: str) -> Upstream | None:
    """dnstype.Resolver.Addr: "ip", "ip:port", "[v6]:port". DoH/other URLs -> None (unsupported)."""
    a = addr.strip()
    if "://" in a or not a:
        return None
    try:
        return Upstream(str(ipaddress.ip_address(a)))
    except ValueError:
        pass
    host, _, port = a.rpartition(":")
    host = host.strip("[]")
    try:
        p = int(port)
        if not 0 < p < 65536:
            return None
        return Upstream(str(ipaddress.ip_address(host)), p)
    except ValueError:
        return None


@dataclass(frozen=True)
class ResolverConfig:
    """What the MagicDNS resolver serves (all names fqdn()-normalised).

    hosts:         name -> addresses (A and AAAA answers)
    local_domains: suffixes answered only locally (NXDOMAIN when the name is unknown)
    routes:        split DNS, suffix -> upstreams (longest suffix wins)
    upstreams:     everything else ("" route); empty -> SERVFAIL
    search:        search domains, used to expand single-label queries locally
    """

    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    local_domains: tuple[str, ...] = ()
    routes: Mapping[str, tuple[Upstream, ...]] = field(default_factory=dict)
    upstreams: tuple[Upstream, ...] = ()
    search: tuple[str, ...] = ()
    ttl: int = 600


def _addrs(prefixes: Iterable[str]) -> list[str]:
    out = []
    for p in prefixes or ():
        try:
            out.append(str(ipaddress.ip_interface(str(p)).ip))
        except ValueError:
            continue
    return out


def _g(obj: Any, attr: str, key: str) -> Any:
    """Read a field from a tailcfg dataclass (snake_case) or a JSON dict (Go name)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def _upstreams(resolvers: Iterable[Any] | None) -> tuple[Upstream, ...]:
    out = []
    for r in resolvers or ():
        addr = r if isinstance(r, str) else _g(r, "addr", "Addr")
        u = parse_upstream(str(addr or ""))
        if u is not None:
            out.append(u)
    return tuple(out)


def config_from_netmap(
    self_node: Any,
    peers: Iterable[Any],
    dns_config: Any,
    *,
    os_upstreams: Iterable[str] = (),
) -> ResolverConfig:
    """Build the resolver config (pure). Nodes/DNSConfig may be tailcfg dataclasses or JSON dicts.

    os_upstreams: the system's original nameservers (from the resolv.conf backup), used when
    the tailnet sets no global Resolvers.
    """
    hosts: dict[str, list[str]] = {}
    self_addrs = _addrs(_g(self_node, "addresses", "Addresses") or ())
    self_has_v4 = any(":" not in a for a in self_addrs)
    cap_map = _g(self_node, "cap_map", "CapMap") or {}
    peer_v6 = CAP_MAGICDNS_AAAA in cap_map or not self_has_v4
    self_name = _g(self_node, "name", "Name") or ""
    if self_name:
        hosts.setdefault(fqdn(self_name), []).extend(self_addrs)
    for p in peers:
        name = _g(p, "name", "Name") or ""
        if not name:
            continue
        addrs = _addrs(_g(p, "addresses", "Addresses") or ())
        if not peer_v6:
            addrs = [a for a in addrs if ":" not in a]
        hosts.setdefault(fqdn(name), []).extend(addrs)
    for rec in _g(dns_config, "extra_records", "ExtraRecords") or ():
        name, value = _g(rec, "name", "Name") or "", _g(rec, "value", "Value") or ""
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            continue
        rtype = (_g(rec, "type", "Type") or "").upper()
        if rtype not in ("", "A", "AAAA") or (rtype == "A" and ip.version != 4) or (rtype == "AAAA" and ip.version != 6):
            continue
        if name:
            hosts.setdefault(fqdn(name), []).append(str(ip))
    local: list[str] = []
    routes: dict[str, tuple[Upstream, ...]] = {}
    if _g(dns_config, "proxied", "Proxied"):
        labels = fqdn(self_name).split(".", 1) if self_name else []
        if len(labels) == 2 and labels[1] not in ("", "."):
            local.append(labels[1])
        local.extend(REVERSE_ZONES)
    for suffix, resolvers in (_g(dns_config, "routes", "Routes") or {}).items():
        ups = _upstreams(resolvers)
        if ups:
            routes[fqdn(suffix)] = ups
        else:
            local.append(fqdn(suffix))
    upstreams = _upstreams(_g(dns_config, "resolvers", "Resolvers"))
    if not upstreams:
        upstreams = _upstreams(list(os_upstreams))
    if not upstreams:
        upstreams = _upstreams(_g(dns_config, "fallback_resolvers", "FallbackResolvers"))
    search = tuple(fqdn(d) for d in (_g(dns_config, "domains", "Domains") or ()) if d)
    return ResolverConfig(
        hosts={k: tuple(dict.fromkeys(v)) for k, v in hosts.items()},
        local_domains=tuple(dict.fromkeys(local)),
        routes=routes,
        upstreams=upstreams,
        search=search,
    )
