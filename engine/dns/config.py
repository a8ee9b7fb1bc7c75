"""MagicDNS config: the pure mapping from netmap (self node, peers, DNSConfig, exit node) to what quad-100 answers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from engine.dns.exitdns import DOH_PATH, field_of, peer_api_base, peer_can_proxy_dns
from engine.dns.names import is_valid_domain, valid_domains
from engine.net.tsaddr import CGNAT_V4, QUAD100_V4, QUAD100_V6, TAILNET_V6  # noqa: F401  (QUAD100_* re-exported)

# Reverse zones answered locally when MagicDNS is on (tailscale magicDNSRootDomains).
REVERSE_ZONES = ("0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.",) + tuple(f"{i}.100.in-addr.arpa." for i in range(64, 128))
CAP_MAGICDNS_AAAA = "magicdns-aaaa"  # self CapMap key: include peers' IPv6 even when we have IPv4
DNS_PORT = 53
HTTP_PORT = 80
HTTPS_PORT = 443


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


@dataclass(frozen=True, slots=True)
class DoHUpstream:
    """A DNS-over-HTTP(S) upstream (RFC 8484, POST), dialled at ``addrs`` (IP literals, in order).

    http:// is what an exit node's peerAPI serves (reached over the tailnet). https:// needs the
    server's addresses without DNS: an IP-literal host or the resolver's BootstrapResolution (we
    never resolve a DoH server's own name through ourselves).
    """

    url: str
    host: str  # Host header value ("ip", "[v6]:port", "name"); also the TLS server name (without port)
    port: int
    path: str  # path plus query, at least "/"
    addrs: tuple[str, ...]
    tls: bool = False

    @property
    def server_name(self) -> str:
        h = self.host
        if h.startswith("["):
            return h[1 : h.index("]")]
        return h.rsplit(":", 1)[0] if ":" in h else h

    def __str__(self) -> str:
        return self.url


AnyUpstream = Upstream | DoHUpstream


def parse_upstream(addr: str, bootstrap: Iterable[str] | None = ()) -> AnyUpstream | None:
    """dnstype.Resolver.Addr: "ip", "ip:port", "[v6]:port", "http(s)://host[:port]/path"; anything else -> None."""
    a = addr.strip()
    if not a:
        return None
    if a.lower().startswith(("http://", "https://")):
        return parse_doh(a, bootstrap)
    if "://" in a:
        return None  # tls://, sdns:// ...: tailscale serves none of these either
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


def parse_doh(url: str, bootstrap: Iterable[str] | None = ()) -> DoHUpstream | None:
    """An http(s):// DoH resolver; None when malformed or when no server address is known without DNS."""
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    tls = scheme == "https"
    host = (u.hostname or "").lower()
    if not host or u.username is not None or u.fragment:
        return None
    default_port = HTTPS_PORT if tls else HTTP_PORT
    port = default_port if port is None else port
    if not 0 < port < 65536:
        return None
    addrs: list[str] = []
    try:
        addrs.append(str(ipaddress.ip_address(host)))
    except ValueError:
        for b in bootstrap or ():
            try:
                addrs.append(str(ipaddress.ip_address(str(b).strip())))
            except ValueError:
                continue
    if not addrs:
        return None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    hostport = f"[{host}]" if ":" in host else host
    if port != default_port:
        hostport += f":{port}"
    return DoHUpstream(url=url.strip(), host=hostport, port=port, path=path, addrs=tuple(dict.fromkeys(addrs)), tls=tls)


@dataclass(frozen=True)
class ResolverConfig:
    """What the MagicDNS resolver serves (all names fqdn()-normalised).

    hosts:         name -> addresses (A and AAAA answers)
    local_domains: suffixes answered only locally (NXDOMAIN when the name is unknown)
    routes:        split DNS, suffix -> upstreams (longest suffix wins)
    upstreams:     everything else ("" route); empty -> SERVFAIL
    search:        search domains, used to expand single-label queries locally
    via_exit_node: the default upstreams are the exit node's DoH (or nothing, failing closed)
    """

    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    local_domains: tuple[str, ...] = ()
    routes: Mapping[str, tuple[AnyUpstream, ...]] = field(default_factory=dict)
    upstreams: tuple[AnyUpstream, ...] = ()
    search: tuple[str, ...] = ()
    ttl: int = 600
    via_exit_node: bool = False


def _addrs(prefixes: Iterable[str]) -> list[str]:
    out = []
    for p in prefixes or ():
        try:
            out.append(str(ipaddress.ip_interface(str(p)).ip))
        except ValueError:
            continue
    return out


def _upstreams(resolvers: Iterable[Any] | None) -> tuple[AnyUpstream, ...]:
    out = []
    for r in resolvers or ():
        if isinstance(r, str):
            addr, boot = r, ()
        else:
            addr, boot = field_of(r, "addr", "Addr"), field_of(r, "bootstrap_resolution", "BootstrapResolution")
        u = parse_upstream(str(addr or ""), boot if isinstance(boot, (list, tuple)) else ())
        if u is not None:
            out.append(u)
    return tuple(out)


def _with_exit_node(resolvers: Iterable[Any] | None) -> list[Any]:
    """tailscale useWithExitNodeResolvers: only the resolvers marked UseWithExitNode."""
    return [
        r for r in resolvers or () if not isinstance(r, str) and field_of(r, "use_with_exit_node", "UseWithExitNode")
    ]


def config_from_netmap(
    self_node: Any,
    peers: Iterable[Any],
    dns_config: Any,
    *,
    os_upstreams: Iterable[str] = (),
    exit_node: Any = None,
    using_exit_node: bool | None = None,
) -> ResolverConfig:
    """Build the resolver config (pure). Nodes/DNSConfig may be tailcfg dataclasses or JSON dicts.

    os_upstreams:    the system's original nameservers (from the resolv.conf backup), used when
                     the tailnet sets no global Resolvers.
    exit_node:       the peer (Node) in use as exit node, or None.
    using_exit_node: an exit node is chosen (default: exit_node is not None); True with
                     exit_node None means chosen but not in the netmap.

    With an exit node (tailscale dnsConfigForNetmap):
    - that can proxy DNS (exitdns.peer_can_proxy_dns): the default upstreams are the global
      Resolvers marked UseWithExitNode, else the exit node's peerAPI DoH
      ("http://<its ip>:<peerapi port>/dns-query", over the tailnet); none when it has no peerAPI
      port in a family we have (fail closed: SERVFAIL, never the local network's DNS). Split
      routes keep only resolvers marked UseWithExitNode; a route left with none is dropped, so
      those names go to the default (the exit node) too; empty routes stay local.
    - that cannot: global Resolvers, else a WireGuard-only exit node's ExitNodeDNSResolvers,
      else FallbackResolvers (tailscale: LAN resolvers are likely unreachable now), else as
      without exit node. Split routes unchanged.
    """
    if using_exit_node is None:
        using_exit_node = exit_node is not None
    hosts: dict[str, list[str]] = {}
    self_prefixes = field_of(self_node, "addresses", "Addresses") or ()
    self_addrs = _addrs(self_prefixes)
    self_has_v4 = any(":" not in a for a in self_addrs)
    cap_map = field_of(self_node, "cap_map", "CapMap") or {}
    peer_v6 = CAP_MAGICDNS_AAAA in cap_map or not self_has_v4
    self_name = field_of(self_node, "name", "Name") or ""
    if self_name:
        hosts.setdefault(fqdn(self_name), []).extend(self_addrs)
    for p in peers:
        name = field_of(p, "name", "Name") or ""
        if not name:
            continue
        addrs = _addrs(field_of(p, "addresses", "Addresses") or ())
        if not peer_v6:
            addrs = [a for a in addrs if ":" not in a]
        hosts.setdefault(fqdn(name), []).extend(addrs)
    for rec in field_of(dns_config, "extra_records", "ExtraRecords") or ():
        name, value = field_of(rec, "name", "Name") or "", field_of(rec, "value", "Value") or ""
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            continue
        rtype = (field_of(rec, "type", "Type") or "").upper()
        if (
            rtype not in ("", "A", "AAAA")
            or (rtype == "A" and ip.version != 4)
            or (rtype == "AAAA" and ip.version != 6)
        ):
            continue
        if name:
            hosts.setdefault(fqdn(name), []).append(str(ip))
    local: list[str] = []
    routes: dict[str, tuple[AnyUpstream, ...]] = {}
    if field_of(dns_config, "proxied", "Proxied"):
        labels = fqdn(self_name).split(".", 1) if self_name else []
        if len(labels) == 2 and is_valid_domain(labels[1]):
            local.append(labels[1])
        local.extend(REVERSE_ZONES)
    global_resolvers = field_of(dns_config, "resolvers", "Resolvers") or ()
    via_exit = using_exit_node and peer_can_proxy_dns(exit_node)
    split = field_of(dns_config, "routes", "Routes") or {}
    for suffix, resolvers in split.items() if isinstance(split, Mapping) else ():
        if not valid_domains([suffix], "split-DNS route"):
            continue  # logged; a name that is no DNS name must never reach resolv.conf / resolvectl
        if via_exit and resolvers:
            resolvers = _with_exit_node(resolvers)
            if not resolvers:
                continue  # not for use with an exit node: the exit node resolves these names
        ups = _upstreams(resolvers)
        if ups:
            routes[fqdn(suffix)] = ups
        else:
            local.append(fqdn(suffix))
    if via_exit:
        marked = _with_exit_node(global_resolvers)
        if marked:
            upstreams = _upstreams(marked)
        else:
            base = peer_api_base(self_prefixes, exit_node)
            doh = parse_doh(base + DOH_PATH) if base else None
            upstreams = (doh,) if doh is not None else ()
    else:
        upstreams = _upstreams(global_resolvers)
        if (
            not upstreams
            and not global_resolvers
            and using_exit_node
            and field_of(exit_node, "is_wireguard_only", "IsWireGuardOnly")
        ):
            upstreams = _upstreams(field_of(exit_node, "exit_node_dns_resolvers", "ExitNodeDNSResolvers"))
        if not upstreams and using_exit_node:
            upstreams = _upstreams(field_of(dns_config, "fallback_resolvers", "FallbackResolvers"))
        if not upstreams:
            upstreams = _upstreams(list(os_upstreams))
        if not upstreams:
            upstreams = _upstreams(field_of(dns_config, "fallback_resolvers", "FallbackResolvers"))
    search = tuple(fqdn(d) for d in valid_domains(field_of(dns_config, "domains", "Domains") or ()))
    return ResolverConfig(
        hosts={k: tuple(dict.fromkeys(v)) for k, v in hosts.items()},
        local_domains=tuple(dict.fromkeys(local)),
        routes=routes,
        upstreams=upstreams,
        search=search,
        via_exit_node=via_exit,
    )
