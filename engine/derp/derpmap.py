"""DERPMap wire types (tailcfg.DERPMap/DERPRegion/DERPNode JSON) and how to dial a node."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_DERP_TLS_PORT = 443
DEFAULT_DERP_HTTP_PORT = 3340  # tailscale's port when TS_DEBUG_USE_DERP_HTTP=1
DEFAULT_STUN_PORT = 3478


@dataclass(frozen=True, slots=True)
class DerpNode:
    """One DERP server (JSON field names as in tailcfg.DERPNode)."""

    name: str
    region_id: int
    host_name: str
    ipv4: str = ""
    ipv6: str = ""
    stun_port: int = 0  # 0 = 3478, -1 = disabled
    stun_only: bool = False
    derp_port: int = 0  # 0 = 443 (TLS) or 3340 (plain HTTP)
    insecure_for_tests: bool = False
    stun_test_ip: str = ""
    cert_name: str = ""

    @classmethod
    def from_json(cls, d: dict) -> "DerpNode":
        return cls(
            name=str(d.get("Name", "")),
            region_id=int(d.get("RegionID", 0)),
            host_name=str(d.get("HostName", "")),
            ipv4=str(d.get("IPv4", "") or ""),
            ipv6=str(d.get("IPv6", "") or ""),
            stun_port=int(d.get("STUNPort", 0) or 0),
            stun_only=bool(d.get("STUNOnly", False)),
            derp_port=int(d.get("DERPPort", 0) or 0),
            insecure_for_tests=bool(d.get("InsecureForTests", False)),
            stun_test_ip=str(d.get("STUNTestIP", "") or ""),
            cert_name=str(d.get("CertName", "") or ""),
        )

    def to_json(self) -> dict:
        d: dict = {"Name": self.name, "RegionID": self.region_id, "HostName": self.host_name}
        for k, v in (
            ("IPv4", self.ipv4),
            ("IPv6", self.ipv6),
            ("STUNPort", self.stun_port),
            ("STUNOnly", self.stun_only),
            ("DERPPort", self.derp_port),
            ("InsecureForTests", self.insecure_for_tests),
            ("STUNTestIP", self.stun_test_ip),
            ("CertName", self.cert_name),
        ):
            if v:
                d[k] = v
        return d

    def dial_host(self) -> str:
        """Address to connect to: a literal IPv4 forces it, else the host name."""
        if self.ipv4 and self.ipv4 != "none":
            return self.ipv4
        if self.ipv6 and self.ipv6 != "none":
            return self.ipv6
        return self.host_name

    def derp_port_for(self, use_http: bool) -> int:
        if self.derp_port:
            return self.derp_port
        return DEFAULT_DERP_HTTP_PORT if use_http else DEFAULT_DERP_TLS_PORT

    def stun_addr(self) -> tuple[str, int] | None:
        """Where to send STUN for this node, or None if STUN is disabled."""
        if self.stun_port < 0:
            return None
        host = self.stun_test_ip or (self.ipv4 if self.ipv4 and self.ipv4 != "none" else self.host_name)
        return host, self.stun_port or DEFAULT_STUN_PORT


@dataclass(frozen=True, slots=True)
class DerpRegion:
    region_id: int
    region_code: str = ""
    region_name: str = ""
    avoid: bool = False
    no_measure_no_home: bool = False
    nodes: tuple[DerpNode, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> "DerpRegion":
        return cls(
            region_id=int(d.get("RegionID", 0)),
            region_code=str(d.get("RegionCode", "") or ""),
            region_name=str(d.get("RegionName", "") or ""),
            avoid=bool(d.get("Avoid", False)),
            no_measure_no_home=bool(d.get("NoMeasureNoHome", False)),
            nodes=tuple(DerpNode.from_json(n) for n in (d.get("Nodes") or [])),
        )

    def to_json(self) -> dict:
        return {
            "RegionID": self.region_id,
            "RegionCode": self.region_code,
            "RegionName": self.region_name,
            "Nodes": [n.to_json() for n in self.nodes],
        }

    def derp_nodes(self) -> list[DerpNode]:
        return [n for n in self.nodes if not n.stun_only]


@dataclass(frozen=True, slots=True)
class DerpMap:
    regions: dict[int, DerpRegion] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict | None) -> "DerpMap":
        regions = {}
        for k, r in ((d or {}).get("Regions") or {}).items():
            if r is None:
                continue
            reg = DerpRegion.from_json(r)
            regions[reg.region_id or int(k)] = reg
        return cls(regions=regions)

    def to_json(self) -> dict:
        return {"Regions": {str(k): r.to_json() for k, r in sorted(self.regions.items())}}
