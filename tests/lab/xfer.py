"""Byte-exact TCP transfers between lab hosts: a receiver and a sender that each report "<bytes> <sha256>".

As a script (run inside a lab host)::

    xfer.py recv PORT [ADDR]                 listen on ADDR (default: "::", dual-stack), print "ready",
                                             take one connection to EOF, print "<bytes> <sha256>"
    xfer.py send HOST PORT NBYTES SEED [RATE]
                                             send NBYTES deterministic bytes (random.Random(SEED)), at most
                                             RATE bytes/s if given, then print "<bytes> <sha256>"

From a test: ``rx = receiver(host, port)``, ``sent = send(other, ip, port, n)`` (or ``sender(...)`` to run it
in the background, then ``sent = received(proc)``), and ``received(rx) == sent``.
"""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(__file__).resolve())
CHUNK = 1 << 20
PACED_CHUNK = 32 << 10  # smaller blocks when a rate is set, so the pace is smooth


def recv_main(port: int, addr: str = "::") -> None:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if addr == "::":
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind((addr, port))
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


def send_main(host: str, port: int, nbytes: int, seed: int, rate: float = 0.0) -> None:
    rnd = random.Random(seed)
    h, sent, block, t0 = hashlib.sha256(), 0, PACED_CHUNK if rate else CHUNK, time.monotonic()
    with socket.create_connection((host, port), timeout=120) as s:
        while sent < nbytes:
            data = rnd.randbytes(min(block, nbytes - sent))
            s.sendall(data)
            h.update(data)
            sent += len(data)
            ahead = sent / rate - (time.monotonic() - t0) if rate else 0
            if ahead > 0:
                time.sleep(ahead)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the receiver closes once it has everything
    print(nbytes, h.hexdigest(), flush=True)


# ---------------------------------------------------------------- test side ------------------------------------


def receiver(host, port: int, addr: str = "::", timeout: float = 20) -> subprocess.Popen:
    """Start ``xfer.py recv`` in lab host ``host``; returns once it listens."""
    proc = host.popen_python(SCRIPT, "recv", str(port), addr)
    host.wait_log(proc, "ready", timeout=timeout)
    return proc


def sender(host, dst: str, port: int, nbytes: int, seed: int = 7, rate: float = 0) -> subprocess.Popen:
    """Start ``xfer.py send`` in lab host ``host`` in the background; its result: ``received(proc)``."""
    return host.popen_python(SCRIPT, "send", dst, str(port), str(nbytes), str(seed), str(rate))


def send(host, dst: str, port: int, nbytes: int, seed: int = 7, rate: float = 0, timeout: float = 240) -> list[str]:
    """Run ``xfer.py send`` in lab host ``host`` to the end; returns ``[str(nbytes), sha256 hex]``."""
    return received(sender(host, dst, port, nbytes, seed, rate), timeout)


def received(proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    """Wait for a ``recv``/``send`` process; its ``[bytes, sha256 hex]`` (AssertionError with its log if it failed)."""
    rc = proc.wait(timeout=timeout)
    out = proc.log_path.read_text(errors="replace")
    assert rc == 0, f"xfer rc={rc}: {out[-2000:]}"
    return out.split()[-2:]


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv_main(int(sys.argv[2]), *sys.argv[3:4])
    else:
        send_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), *map(float, sys.argv[6:7]))
