"""tailcfg DERPMap, DERPRegion and DERPNode wire types (tailcfg/derpmap.go)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tailcfg.codec import go


@dataclass(frozen=True, slots=True)
class DERPNode:
    """One DERP server. STUNPort 0 = 3478, -1 = no STUN; DERPPort 0 = 443 (3340 with plain HTTP)."""

    name: str = go("Name", default="")
    region_id: int = go("RegionID", default=0)
    host_name: str = go("HostName", default="")
    cert_name: str | None = go("CertName")
    ipv4: str | None = go("IPv4")  # literal address or "none"
    ipv6: str | None = go("IPv6")
    stun_port: int = go("STUNPort", default=0)
    stun_only: bool | None = go("STUNOnly")
    derp_port: int = go("DERPPort", default=0)
    insecure_for_tests: bool | None = go("InsecureForTests")
    stun_test_ip: str | None = go("STUNTestIP")
    can_port80: bool | None = go("CanPort80")


@dataclass(frozen=True, slots=True)
class DERPRegion:
    region_id: int = go("RegionID", default=0)
    region_code: str = go("RegionCode", default="")
    region_name: str = go("RegionName", default="")
    latitude: float | None = go("Latitude")
    longitude: float | None = go("Longitude")
    avoid: bool | None = go("Avoid")
    no_measure_no_home: bool | None = go("NoMeasureNoHome")
    nodes: tuple[DERPNode, ...] = go("Nodes", default=())


@dataclass(frozen=True, slots=True)
class DERPMap:
    """MapResponse.DERPMap; in a MapResponse, None means unchanged."""

    home_params: Any = go("HomeParams")
    regions: dict[int, DERPRegion] | None = go("Regions")
    omit_default_regions: bool | None = go("omitDefaultRegions")
