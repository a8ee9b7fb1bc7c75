"""This host's interface addresses as prefixes ("198.51.100.2/24"), from `ip -j addr` (the OS adapter for localnets)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Iterable


def interface_prefixes(exclude_ifaces: Iterable[str] = ()) -> tuple[str, ...]:
    """Every address of every interface (up or down, loopback included) as "addr/prefixlen", sorted.

    Interfaces named in ``exclude_ifaces`` (our own TUN) are left out. Any OS error gives ().
    Safe on an event-loop thread (no asyncio inside; pyroute2's sync API is not).
    """
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        ifaces = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return ()
    return parse_ip_addr_json(ifaces, exclude_ifaces)


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
