"""TCP transfer endpoint for interop tests: `recv PORT` / `send HOST PORT NBYTES SEED`; each prints "<bytes> <sha256>"."""

from __future__ import annotations

import hashlib
import random
import socket
import sys

CHUNK = 1 << 20


def recv(port: int) -> None:
    fam = socket.AF_INET6
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    h, n = hashlib.sha256(), 0
    buf = bytearray(CHUNK)
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        h.update(memoryview(buf)[:k])
        n += k
    print(n, h.hexdigest(), flush=True)


def send(host: str, port: int, nbytes: int, seed: int) -> None:
    rnd = random.Random(seed)
    h, left = hashlib.sha256(), nbytes
    with socket.create_connection((host, port), timeout=60) as s:
        while left:
            block = rnd.randbytes(min(CHUNK, left))
            s.sendall(block)
            h.update(block)
            left -= len(block)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    print(nbytes, h.hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
