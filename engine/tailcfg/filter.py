"""tailcfg FilterRule / NetPortRange wire types (packet filter rules from the control server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tailcfg.codec import go


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int = go("First", default=0)
    last: int = go("Last", default=0)


@dataclass(frozen=True, slots=True)
class NetPortRange:
    ip: str = go("IP", default="")  # "*", IP, CIDR, "a-b"
    bits: Any = go("Bits")  # deprecated
    ports: PortRange = go("Ports", default_factory=PortRange)


@dataclass(frozen=True, slots=True)
class FilterRule:
    """SrcIPs may be IP, "*", CIDR, "a-b" or "cap:..."; empty IPProto = TCP, UDP, ICMPv4, ICMPv6."""

    src_ips: tuple[str, ...] = go("SrcIPs", default=())
    src_bits: Any = go("SrcBits")  # deprecated; Go client rejects it
    dst_ports: tuple[NetPortRange, ...] = go("DstPorts", default=())
    ip_proto: tuple[int, ...] | None = go("IPProto")
    cap_grant: Any = go("CapGrant")


FILTER_ALLOW_ALL = (FilterRule(src_ips=("*",), dst_ports=(NetPortRange(ip="*", ports=PortRange(0, 65535)),)),)
