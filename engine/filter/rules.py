"""Compile tailcfg FilterRule JSON (SrcIPs, DstPorts, IPProto) into integer-range matchers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from engine.filter.packet import PROTO_ICMP4, PROTO_ICMP6, PROTO_TCP, PROTO_UDP

# IPProto empty/absent means these four (tailcfg FilterRule doc).
DEFAULT_PROTOS = frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMP4, PROTO_ICMP6})
ALL_PORTS = (0, 65535)

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1


class FilterRuleError(ValueError):
    """A FilterRule could not be compiled (names the offending field)."""


# An address range per family, inclusive ints: (lo, hi).
Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class DstRange:
    """One destination: an inclusive address range and an inclusive port range."""

    lo: int
    hi: int
    first: int
    last: int

    @property
    def all_ports(self) -> bool:
        return self.first == 0 and self.last == 65535


@dataclass(frozen=True, slots=True)
class Match:
    """One compiled FilterRule, split by address family (index 4 / 6 via src4/src6...)."""

    protos: frozenset[int]
    src4: tuple[Range, ...]
    src6: tuple[Range, ...]
    dst4: tuple[DstRange, ...]
    dst6: tuple[DstRange, ...]
    src_caps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IPSet:
    """A parsed SrcIPs/DstPorts.IP string: ranges per family, or a node capability."""

    v4: tuple[Range, ...] = ()
    v6: tuple[Range, ...] = ()
    cap: str = ""


def parse_ip_set(arg: str) -> IPSet:
    """Parse one of: IP, "*", CIDR (no host bits), "a-b" inclusive range, "cap:<name>"."""
    if arg == "*":
        return IPSet(v4=((0, V4_MAX),), v6=((0, V6_MAX),))
    if arg.startswith("cap:"):
        return IPSet(cap=arg[4:])
    if "/" in arg:
        try:
            net = ipaddress.ip_network(arg, strict=True)
        except ValueError as e:
            raise FilterRuleError(f"invalid CIDR {arg!r}: {e}") from None
        r = (int(net.network_address), int(net.broadcast_address))
        return IPSet(v4=(r,)) if net.version == 4 else IPSet(v6=(r,))
    if arg.count("-") == 1:
        a, b = arg.split("-")
        try:
            ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
        except ValueError:
            raise FilterRuleError(f"invalid IP range {arg!r}") from None
        if ia.version != ib.version or int(ia) > int(ib):
            raise FilterRuleError(f"invalid IP range {arg!r}")
        r = (int(ia), int(ib))
        return IPSet(v4=(r,)) if ia.version == 4 else IPSet(v6=(r,))
    try:
        ip = ipaddress.ip_address(arg)
    except ValueError:
        raise FilterRuleError(f"invalid IP address {arg!r}") from None
    r = (int(ip), int(ip))
    return IPSet(v4=(r,)) if ip.version == 4 else IPSet(v6=(r,))


def _get(d: Mapping[str, Any], key: str) -> Any:
    """Go decodes JSON keys case-insensitively; accept the exact name first, then any case."""
    if key in d:
        return d[key]
    low = key.lower()
    for k, v in d.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def _as_json(rule: Any) -> Mapping[str, Any]:
    """An engine.tailcfg.filter.FilterRule (wire dataclass) as its Go-named JSON dict."""
    from engine.tailcfg.codec import encode

    return encode(rule)


def compile_rules(rules: Sequence[Mapping[str, Any] | Any]) -> tuple[list[Match], list[str]]:
    """Compile FilterRules (JSON dicts or tailcfg FilterRule dataclasses); returns (matches, errors).

    Bad entries are skipped and reported. As in tailscale, a rule carrying the deprecated
    SrcBits (or DstPorts[].Bits) is a hard error for the whole list: raises FilterRuleError.
    """
    out: list[Match] = []
    errors: list[str] = []
    for i, r in enumerate(rules):
        if not isinstance(r, Mapping):
            try:
                r = _as_json(r)
            except TypeError:  # null rule, or a null inside one (decoded from JSON as None)
                errors.append(f"rule {i}: not a FilterRule object")
                continue
        if _get(r, "SrcBits"):
            raise FilterRuleError(f"rule {i}: unexpected SrcBits; control plane should not send this")
        protos_in = _get(r, "IPProto")
        if not protos_in:
            protos = DEFAULT_PROTOS
        else:
            protos = frozenset(p for p in protos_in if isinstance(p, int) and 0 <= p <= 0xFF)
        src4: list[Range] = []
        src6: list[Range] = []
        caps: list[str] = []
        for s in _get(r, "SrcIPs") or ():
            try:
                ips = parse_ip_set(str(s))
            except FilterRuleError as e:
                errors.append(f"rule {i}: SrcIPs: {e}")
                continue
            src4.extend(ips.v4)
            src6.extend(ips.v6)
            if ips.cap:
                caps.append(ips.cap)
        dst4: list[DstRange] = []
        dst6: list[DstRange] = []
        for d in _get(r, "DstPorts") or ():
            if not isinstance(d, Mapping):
                errors.append(f"rule {i}: DstPorts: not an object")
                continue
            if _get(d, "Bits") is not None:
                raise FilterRuleError(f"rule {i}: unexpected DstPorts.Bits; control plane should not send this")
            try:
                ips = parse_ip_set(str(_get(d, "IP") or ""))
            except FilterRuleError as e:
                errors.append(f"rule {i}: DstPorts.IP: {e}")
                continue
            if ips.cap:
                errors.append(f"rule {i}: unexpected capability {ips.cap!r} in DstPorts")
                continue
            ports = _get(d, "Ports") or {}
            first = _get(ports, "First") or 0
            last = _get(ports, "Last") or 0
            if not (isinstance(first, int) and isinstance(last, int)):
                errors.append(f"rule {i}: DstPorts.Ports not integers")
                continue
            for lo, hi in ips.v4:
                dst4.append(DstRange(lo, hi, first, last))
            for lo, hi in ips.v6:
                dst6.append(DstRange(lo, hi, first, last))
        out.append(Match(protos, tuple(src4), tuple(src6), tuple(dst4), tuple(dst6), tuple(caps)))
    return out, errors


def concat_packet_filters(chunks: Mapping[str, Iterable[Mapping[str, Any]] | None]) -> list[Mapping[str, Any]]:
    """MapResponse.PacketFilters: the effective rule list is the chunks concatenated in key order."""
    rules: list[Mapping[str, Any]] = []
    for key in sorted(chunks):
        rules.extend(chunks[key] or ())
    return rules


def prefixes_to_ranges(prefixes: Iterable[str]) -> tuple[tuple[Range, ...], tuple[Range, ...]]:
    """Local addresses/routes ("100.64.0.1/32", "10.0.0.0/24", bare IPs) -> (v4 ranges, v6 ranges).

    Overlapping and adjacent ranges are merged (sorted), so a default route shrunk into many
    prefixes (engine.filter.localnets) costs the per-packet scan only a handful of ranges.
    """
    v4: list[Range] = []
    v6: list[Range] = []
    for p in prefixes:
        net = ipaddress.ip_network(str(p), strict=False)
        r = (int(net.network_address), int(net.broadcast_address))
        (v4 if net.version == 4 else v6).append(r)
    return _merge(v4), _merge(v6)


def _merge(ranges: list[Range]) -> tuple[Range, ...]:
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)
