"""tailcfg DNSConfig and dnstype.Resolver wire types (tailcfg.go ~L1738, types/dnstype)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.tailcfg.codec import go


@dataclass(frozen=True, slots=True)
class DNSResolver:
    addr: str = go("Addr", default="")  # "ip", "ip:port", "https://..."
    bootstrap_resolution: tuple[str, ...] | None = go("BootstrapResolution")
    use_with_exit_node: bool | None = go("UseWithExitNode")


@dataclass(frozen=True, slots=True)
class DNSRecord:
    name: str = go("Name", default="")
    type: str = go("Type", default="")  # "", "A", "AAAA"
    value: str = go("Value", default="")


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """MapResponse.DNSConfig (None in a MapResponse = unchanged). Routes: empty list = answered locally."""

    resolvers: tuple[DNSResolver, ...] | None = go("Resolvers")
    routes: dict[str, tuple[DNSResolver, ...] | None] | None = go("Routes")
    fallback_resolvers: tuple[DNSResolver, ...] | None = go("FallbackResolvers")
    domains: tuple[str, ...] | None = go("Domains")
    proxied: bool | None = go("Proxied")
    nameservers: tuple[str, ...] | None = go("Nameservers")
    cert_domains: tuple[str, ...] | None = go("CertDomains")
    extra_records: tuple[DNSRecord, ...] | None = go("ExtraRecords")
