"""Lab: our engine <-> our engine on real TUNs in two namespaces (IPv4 and IPv6 underlay)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.dataplane import labpair
from tests.dataplane.labpair import TUN_A, TUN_A6, TUN_B, TUN_B6, engine_pair, wait_ping

pytestmark = pytest.mark.lab

RECEIVER = r"""
import hashlib, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(1)
print("LISTENING", flush=True)
c, _ = s.accept()
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

SENDER = r"""
import socket, sys, time
data = open(sys.argv[2], "rb").read()
pace = float(sys.argv[3])
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.create_connection((sys.argv[1], 9000), timeout=60)
step = 1 << 18
for off in range(0, len(data), step):
    c.sendall(data[off:off + step])
    if pace:
        time.sleep(pace)
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""


def transfer(lab, src, dst, dst_ip: str, size: int, pace: float = 0.0) -> None:
    blob = lab.dir / f"blob-{size}"
    blob.write_bytes(os.urandom(size))
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    import subprocess
    rx = dst.popen_python(RECEIVER, dst_ip, stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "LISTENING"
    src.exec_python(SENDER, dst_ip, str(blob), str(pace), timeout=120)
    line = rx.stdout.readline().split()
    rx.wait(timeout=30)
    assert line == [str(size), want]


@pytest.mark.parametrize("v6", [False, True], ids=["v4-underlay", "v6-underlay"])
def test_ping_and_tcp_transfer(lab, v6):
    p = engine_pair(lab, v6=v6)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    wait_ping(b, TUN_A)
    wait_ping(a, TUN_B6)
    wait_ping(b, TUN_A6)
    transfer(lab, a, b, TUN_B, 20 << 20)
    transfer(lab, b, a, TUN_A6, 5 << 20)
    sa, sb = p.a.status(), p.b.status()
    assert sa["peers"][0]["last_handshake"] and sb["peers"][0]["last_handshake"]
    want_ep = f"[{labpair.UL_A6}]:51820" if v6 else f"{labpair.UL_A}:51820"
    assert sb["peers"][0]["endpoint"] == want_ep
    assert sa["peers"][0]["tx_bytes"] > 20 << 20
    for s in (sa, sb):
        assert not s["counters"].get("worker_crashed")
        assert not s["counters"].get("drop_decrypt_transport")


def test_rekey_while_traffic_continues(lab):
    timings = {"rekey_after_time": 2.0, "reject_after_time": 20.0, "rekey_timeout": 1.0}
    p = engine_pair(lab, timings=timings)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    first = p.a.status()["peers"][0]["last_handshake"]
    transfer(lab, a, b, TUN_B, 8 << 20, pace=0.25)  # ~8 s of paced traffic
    sa, sb = p.a.status(), p.b.status()
    assert sa["peers"][0]["last_handshake"] > first
    completed = sa["counters"].get("handshakes_completed", 0) + sb["counters"].get("handshakes_completed", 0)
    assert completed >= 4, (sa, sb)


def test_tso_reads_segmented(lab):
    """The TSO variant (TUN hands us 64 KiB super-packets) still delivers byte-exact data."""
    p = engine_pair(lab, tso=True)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    transfer(lab, a, b, TUN_B, 10 << 20)
    transfer(lab, a, b, TUN_B6, 3 << 20)
