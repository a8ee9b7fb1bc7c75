"""Minimal blocking LocalAPI reader (GET /localapi/v0/status over a Unix socket) for lab polling.

The Unix socket is a filesystem object, so the test process can poll a node running inside a
lab namespace without spawning anything there; that keeps path polling cheap enough to run
every few hundred milliseconds for many cells at once on a 2-core machine.
"""

from __future__ import annotations

import http.client
import json
import socket

LOCALAPI_HOST = "local-tailscaled.sock"  # the Host header tailscale's own CLI sends


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(LOCALAPI_HOST, timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def get_json(socket_path: str, path: str, timeout: float = 5.0) -> dict:
    """GET `path` from the LocalAPI at `socket_path`; returns the decoded JSON (OSError/ValueError on failure)."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path, headers={"Host": LOCALAPI_HOST})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"LocalAPI {path}: HTTP {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def status(socket_path: str, timeout: float = 5.0) -> dict:
    return get_json(socket_path, "/localapi/v0/status", timeout)
