"""What the OS resolver should be told (nameservers, search and routing domains), independent of the mechanism."""

from __future__ import annotations

from dataclasses import dataclass

from engine.dns.config import QUAD100_V4, QUAD100_V6, ResolverConfig
from engine.dns.names import valid_domains


@dataclass(frozen=True, slots=True)
class OSDNSConfig:
    """OS resolver settings. route_all=False means only match_domains go to our nameservers (split)."""

    nameservers: tuple[str, ...] = ()
    search_domains: tuple[str, ...] = ()
    match_domains: tuple[str, ...] = ()
    route_all: bool = True

    def is_empty(self) -> bool:
        return not self.nameservers


def os_config_for(resolver: ResolverConfig, *, ipv6: bool = False, route_all: bool = True) -> OSDNSConfig:
    """Point the OS at quad-100: for everything (route_all; we forward the rest) or only our domains.

    resolv.conf cannot split, so it always routes all; with systemd-resolved, route_all should
    be True only when the tailnet sets global Resolvers ("override local DNS").
    """
    ns = (QUAD100_V4, QUAD100_V6) if ipv6 else (QUAD100_V4,)
    search = tuple(valid_domains(resolver.search))
    match = tuple(
        valid_domains(
            (d for d in (*resolver.local_domains, *resolver.routes) if not d.endswith(".arpa.")), "split-DNS domain"
        )
    )
    return OSDNSConfig(nameservers=ns, search_domains=search, match_domains=match, route_all=route_all)
