"""peerAPI port choice and the Hostinfo.Services entries that announce it (pure).

Port: a best-effort deterministic choice per tailnet address, so it rarely changes across
restarts (tailscale ipn/ipnlocal/peerapi.go listen): CRC-32 (IEEE) of the last three bytes of
the 16-byte form of the address, the first of those bytes plus the try number (0..4, wrapping
at 256), low 16 bits OR 0x8000 (so always 32768..65535). Tailscale's v4 and v6 addresses share
their low three bytes, so both families usually get the same port. After five taken ports the
kernel picks one (port 0).

Services (tailcfg.Service, Proto/Port): "peerapi4"/"peerapi6" = the port on our tailnet IPv4/IPv6
address; "peerapi-dns-proxy" with Port 1 (a version, must be 1) = "/dns-query" is served.
A client computes our peerAPI base URL as http://<our address of a family it has>:<port>.
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import Mapping

Service = dict[str, str | int]  # one tailcfg.Service: {"Proto": str, "Port": int}

PORT_TRIES = 5
PORT_BASE = 0x8000  # ORed into the 16-bit hash: ports 32768..65535
PROTO_PEERAPI4 = "peerapi4"
PROTO_PEERAPI6 = "peerapi6"
PROTO_PEERAPI_DNS = "peerapi-dns-proxy"
PEERAPI_DNS_VERSION = 1  # the Port value of "peerapi-dns-proxy"


def candidate_ports(ip: str) -> list[int]:
    """The deterministic ports to try, in order, for our tailnet address ``ip`` (then fall back to 0)."""
    a16 = ipaddress.ip_address(ip)
    raw = (a16.packed if a16.version == 6 else b"\x00" * 10 + b"\xff\xff" + a16.packed)[-3:]
    out = []
    for t in range(PORT_TRIES):
        data = bytes([(raw[0] + t) & 0xFF]) + raw[1:]
        out.append(PORT_BASE | (zlib.crc32(data) & 0xFFFF))
    return out


def services(ports: Mapping[str, int], *, dns_proxy: bool) -> tuple[Service, ...]:
    """Hostinfo.Services for the listeners in ``ports`` (address -> port), IPv4 first."""
    out: list[Service] = []
    for ip, port in sorted(ports.items(), key=lambda kv: (":" in kv[0], kv[0])):
        if port:
            out.append({"Proto": PROTO_PEERAPI6 if ":" in ip else PROTO_PEERAPI4, "Port": int(port)})
    if dns_proxy:
        out.append({"Proto": PROTO_PEERAPI_DNS, "Port": PEERAPI_DNS_VERSION})
    return tuple(out)
