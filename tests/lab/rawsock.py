"""One raw exchange on a stream socket: for tests that send bytes a real client would not (malformed HTTP, UAPI)."""

from __future__ import annotations

import os
import socket


def _connect(address: str | os.PathLike | tuple[str, int], timeout: float | None) -> socket.socket:
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(os.fspath(address))
    except OSError:
        s.close()
        raise
    return s


def exchange(
    address: str | os.PathLike | tuple[str, int], data: bytes, *, timeout: float | None = 10.0, shut_wr: bool = False
) -> bytes:
    """Connect to ``address``, send ``data`` and return all that comes back until the other side closes.

    ``address``: a path (a Unix socket) or ``(host, port)`` (TCP). ``shut_wr``: half-close after sending, for a
    server that answers only at EOF. Socket errors (a timeout too) propagate.
    """
    with _connect(address, timeout) as s:
        s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


__all__ = ["exchange"]
