"""Netcheck (sans-IO): STUN probe plan per DERP region, report of public endpoints, NAT kind, latencies, home region."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.derp.derpmap import DerpMap
from engine.net import stun

STUN_TIMEOUT = 3.0  # seconds to wait for STUN answers (tailscale stunProbeTimeout)
# Home-region stickiness (netcheck addReportHistoryAndSetPreferredDERP): keep the old region
# unless the new best is both >= 10 ms better and below 2/3 of the old region's latency.
STICKY_MIN_IMPROVEMENT = 0.010
STICKY_RATIO = 2 / 3


@dataclass(frozen=True, slots=True)
class Probe:
    region_id: int
    node: str
    dest: tuple[str, int]
    txid: bytes
    packet: bytes


@dataclass
class Report:
    """One netcheck result, shaped like tailscale's netcheck.Report / tailcfg.NetInfo."""

    udp: bool = False
    global_v4: tuple[str, int] | None = None
    mapped: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)  # dest -> our public addr
    mapping_varies_by_dest_ip: bool | None = None
    region_latency: dict[int, float] = field(default_factory=dict)  # seconds
    preferred_derp: int = 0

    def net_info(self) -> dict:
        """tailcfg.NetInfo JSON (Go field names) for Hostinfo.NetInfo."""
        d: dict = {
            "WorkingIPv6": False,
            "WorkingUDP": self.udp,
            "HavePortMap": False,
            "PreferredDERP": self.preferred_derp,
            "DERPLatency": {f"{r}-v4": round(lat, 6) for r, lat in sorted(self.region_latency.items())},
        }
        if self.mapping_varies_by_dest_ip is not None:
            d["MappingVariesByDestIP"] = self.mapping_varies_by_dest_ip
        return d

    def to_json(self) -> dict:
        """The report for `meshctl netcheck` / LocalAPI."""
        return {
            "UDP": self.udp,
            "GlobalV4": f"{self.global_v4[0]}:{self.global_v4[1]}" if self.global_v4 else "",
            "MappingVariesByDestIP": self.mapping_varies_by_dest_ip,
            "PreferredDERP": self.preferred_derp,
            "RegionLatency": {str(r): round(v * 1000, 3) for r, v in sorted(self.region_latency.items())},
            "Mapped": {f"{d[0]}:{d[1]}": f"{m[0]}:{m[1]}" for d, m in self.mapped.items()},
        }


def plan(derp_map: DerpMap, random: Callable[[int], bytes]) -> list[Probe]:
    """One STUN probe per STUN-capable node of every region (IPv4 destinations only)."""
    out = []
    for rid, region in sorted(derp_map.regions.items()):
        if region.no_measure_no_home:
            continue
        for node in region.nodes:
            dest = node.stun_addr()
            if dest is None:
                continue
            txid = random(stun.TXID_LEN)
            out.append(Probe(region_id=rid, node=node.name, dest=dest, txid=txid, packet=stun.build_request(txid)))
    return out


class NetcheckRun:
    """Collects STUN answers for a plan; `report()` turns them into a Report."""

    def __init__(self, probes: list[Probe], sent_at: float) -> None:
        self.probes = {p.txid: p for p in probes}
        self.sent_at = sent_at
        self.answers: dict[bytes, tuple[float, tuple[str, int]]] = {}
        self.rejected = 0

    def handle_response(self, data: bytes, now: float) -> bool:
        """Feed a STUN datagram; True if it answered one of our probes."""
        try:
            if len(data) < stun.HEADER_LEN:
                raise stun.StunParseError("short")
            txid = bytes(data[8:20])
            if txid not in self.probes or txid in self.answers:
                raise stun.StunParseError("unknown transaction")
            resp = stun.parse_response(data, want_txid=txid)
        except stun.StunParseError:
            self.rejected += 1
            return False
        self.answers[txid] = (now - self.sent_at, resp.addr)
        return True

    def done(self) -> bool:
        return len(self.answers) == len(self.probes)

    def report(self, previous_home: int = 0, tcp_latency: dict[int, float] | None = None) -> Report:
        r = Report()
        for txid, (lat, addr) in self.answers.items():
            p = self.probes[txid]
            r.mapped[p.dest] = addr
            old = r.region_latency.get(p.region_id)
            r.region_latency[p.region_id] = lat if old is None else min(old, lat)
        r.udp = bool(self.answers)
        if r.mapped:
            r.global_v4 = Counter(r.mapped.values()).most_common(1)[0][0]
            by_ip: dict[str, set] = {}
            for dest, addr in r.mapped.items():
                by_ip.setdefault(dest[0], set()).add(addr)
            if len(by_ip) >= 2:
                distinct = {a for s in by_ip.values() for a in s}
                r.mapping_varies_by_dest_ip = len(distinct) > 1
        lat = dict(r.region_latency)
        if not lat and tcp_latency:
            lat = dict(tcp_latency)
            r.region_latency = lat
        r.preferred_derp = choose_home(lat, previous_home)
        return r


def choose_home(latency: dict[int, float], previous: int) -> int:
    """Lowest-latency region, but sticky: keep `previous` unless the new one is clearly better."""
    if not latency:
        return previous
    best = min(latency, key=lambda k: (latency[k], k))
    if previous and previous in latency and best != previous:
        old = latency[previous]
        new = latency[best]
        if old - new < STICKY_MIN_IMPROVEMENT or new > old * STICKY_RATIO:
            return previous
    return best
