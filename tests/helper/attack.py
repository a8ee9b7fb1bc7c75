"""Raw LocalAPI requests from another uid (a `python -c` script run via TempUser) for the attack tests."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helper.conftest import TempUser
from tests.lab.rawsock import exchange

# argv: socket method path [json-body]; prints {"status": int, "body": any} (status 0: no answer).
REQUEST = r"""
import json, socket, sys
sock, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else b""
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sock)
s.sendall(f"{method} {path} HTTP/1.1\r\nHost: local-tailscaled.sock\r\nContent-Length: {len(body)}\r\n"
          f"Connection: close\r\n\r\n".encode() + body)
out = b""
while True:
    try:
        chunk = s.recv(65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
head, _, payload = out.partition(b"\r\n\r\n")
status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
try:
    parsed = json.loads(payload) if payload.strip() else None
except ValueError:
    parsed = payload.decode(errors="replace")
print(json.dumps({"status": status, "body": parsed}))
"""


def request_as(user: TempUser | None, sock: str, method: str, path: str, body: object = None) -> dict:
    """One request on its own connection, as `user` (None: as this process, root)."""
    argv = [sys.executable, "-c", REQUEST, sock, method, path]
    if body is not None:
        argv.append(json.dumps(body))
    if user is None:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    else:
        p = user.run(*argv)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def raw_request(sock: str, method: str, path: str, timeout: float = 10.0) -> bytes:
    """A request as this process (root) on a fresh connection; the whole answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n"
    return exchange(sock, head.encode(), timeout=timeout)


def counters(sock: str) -> dict:
    """GET meshvpn/counters as root."""
    resp = raw_request(sock, "GET", "/localapi/v0/meshvpn/counters")
    assert resp.startswith(b"HTTP/1.1 200 "), resp[:300]
    return json.loads(resp.partition(b"\r\n\r\n")[2])
