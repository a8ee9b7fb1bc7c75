"""UDP endpoints as value objects: what a Bind sends to and reports as a datagram's source."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple


class UdpEndpoint(NamedTuple):
    """A normalised IP address text and a UDP port; printable as ``ip:port`` / ``[ip]:port``.

    A tuple ``(ip, port)`` on purpose: the wg core binds cookies and rate limits to the IP of
    an ``(ip, port)`` tuple source.  IPv4-mapped IPv6 addresses are stored as IPv4.  Other
    Binds (magicsock) may use their own hashable endpoint classes.
    """

    ip: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "UdpEndpoint":
        """Parse ``1.2.3.4:51820`` or ``[fd00::1]:51820`` (host names are not resolved)."""
        text = text.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"endpoint {text!r}: missing ']:port'")
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"endpoint {text!r}: want ip:port or [ip6]:port")
        return cls.of(host, int(port))

    @classmethod
    def of(cls, host: object, port: int) -> "UdpEndpoint":
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port {port} out of range")
        return cls(str(ip), int(port))

    @classmethod
    def from_sockaddr(cls, addr: tuple) -> "UdpEndpoint":
        """Build from a socket address tuple (as returned by recvmsg)."""
        host = addr[0]
        if host.startswith("::ffff:") and "." in host:
            return cls(host[7:], addr[1])
        return cls.of(host, addr[1])

    @property
    def version(self) -> int:
        return 6 if ":" in self.ip else 4

    def sockaddr(self, family: int = socket.AF_INET6) -> tuple:
        """The address tuple for ``sendmsg`` on a socket of ``family`` (dual-stack v6 by default)."""
        if family == socket.AF_INET6:
            if ":" not in self.ip:
                return ("::ffff:" + self.ip, self.port, 0, 0)
            return (self.ip, self.port, 0, 0)
        return (self.ip, self.port)

    def __str__(self) -> str:
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


def as_endpoint(value: object) -> object:
    """Accept an endpoint object, ``"ip:port"`` text or an ``(ip, port)`` tuple."""
    if isinstance(value, UdpEndpoint):
        return value
    if isinstance(value, str):
        return UdpEndpoint.parse(value)
    if isinstance(value, tuple) and len(value) == 2:
        return UdpEndpoint.of(value[0], value[1])
    return value
