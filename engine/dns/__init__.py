"""MagicDNS: the quad-100 resolver core, its asyncio server/forwarder adapters and the OS DNS configurators."""

from engine.dns.config import (
    QUAD100_V4,
    QUAD100_V6,
    DoHUpstream,
    ResolverConfig,
    Upstream,
    config_from_netmap,
    parse_upstream,
)
from engine.dns.osconfig import OSDNSConfig, os_config_for
from engine.dns.resolver import Drop, Forward, Reply, Resolver

__all__ = [
    "QUAD100_V4",
    "QUAD100_V6",
    "DoHUpstream",
    "ResolverConfig",
    "Upstream",
    "config_from_netmap",
    "parse_upstream",
    "OSDNSConfig",
    "os_config_for",
    "Drop",
    "Forward",
    "Reply",
    "Resolver",
]
