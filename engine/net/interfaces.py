"""This host's network interfaces: addresses as prefixes, endpoint candidates, per-interface IPv4 (one OS adapter)."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from typing import Iterable

from engine.net.tsaddr import is_tailnet_ip


def _ip_addr_json() -> list:
    """`ip -j addr show`, parsed; [] on any OS error."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        ifaces = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return ifaces if isinstance(ifaces, list) else []


def interface_prefixes(exclude_ifaces: Iterable[str] = ()) -> tuple[str, ...]:
    """Every address of every interface (up or down, loopback included) as "addr/prefixlen", sorted.

    Interfaces named in ``exclude_ifaces`` (our own TUN) are left out. Any OS error gives ().
    Safe on an event-loop thread (no asyncio inside; pyroute2's sync API is not).
    """
    return parse_ip_addr_json(_ip_addr_json(), exclude_ifaces)


def parse_ip_addr_json(ifaces: list, exclude_ifaces: Iterable[str] = ()) -> tuple[str, ...]:
    """`ip -j addr show` output (parsed JSON) -> sorted "addr/prefixlen" strings (pure)."""
    skip = set(exclude_ifaces)
    found: set[str] = set()
    for itf in ifaces if isinstance(ifaces, list) else ():
        if not isinstance(itf, dict) or itf.get("ifname") in skip:
            continue
        for a in itf.get("addr_info") or ():
            try:
                # "local" is our address; on point-to-point links "address" is the peer's
                found.add(str(ipaddress.ip_interface(f"{str(a['local']).split('%')[0]}/{int(a['prefixlen'])}")))
            except (KeyError, TypeError, ValueError):
                continue
    return tuple(sorted(found))


def local_endpoints(port: int, exclude_ifaces: Iterable[str] = ()) -> list[str]:
    """Interface addresses (no loopback/link-local/multicast/tailnet) of UP interfaces with ``port``, IPv4 first."""
    return parse_endpoints(_ip_addr_json(), port, exclude_ifaces)


def parse_endpoints(ifaces: list, port: int, exclude_ifaces: Iterable[str] = ()) -> list[str]:
    """`ip -j addr show` output (parsed JSON) -> "ip:port" / "[ip6]:port" endpoint candidates (pure)."""
    skip = set(exclude_ifaces)
    v4: list[str] = []
    v6: list[str] = []
    for itf in ifaces if isinstance(ifaces, list) else ():
        if not isinstance(itf, dict) or itf.get("ifname") in skip or "UP" not in (itf.get("flags") or []):
            continue
        for a in itf.get("addr_info") or ():
            try:
                ip = ipaddress.ip_address(str(a.get("local", "")))
            except (AttributeError, ValueError):
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or is_tailnet_ip(ip):
                continue
            (v4 if ip.version == 4 else v6).append(f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}")
    return v4 + v6


def interface_ipv4_addrs() -> list[str]:
    """Primary IPv4 address of each interface of this namespace (SIOCGIFADDR; no netlink needed)."""
    import fcntl
    import struct

    SIOCGIFADDR = 0x8915
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _idx, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address
            out.append(socket.inet_ntoa(res[20:24]))
    return out
