"""Sockets bound to tailnet addresses before they exist on the TUN (IP_FREEBIND), for MagicDNS and the peerAPI."""

from __future__ import annotations

import contextlib
import socket

IP_FREEBIND = 15  # linux/in.h
IPV6_FREEBIND = 78  # linux/in6.h


def bound_socket(host: str, port: int, kind: int) -> socket.socket:
    """A non-blocking socket (SOCK_DGRAM / SOCK_STREAM) bound to host:port; IPv6 sockets are v6-only."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            if fam == socket.AF_INET:
                s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.setblocking(False)
        return s
    except BaseException:
        s.close()
        raise
