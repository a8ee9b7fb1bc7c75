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


@pytest.mark.parametrize("tso", [False, True], ids=["plain", "tso"])
def test_interop_with_wireguard_go(lab, tso):
    """Our engine on a, wireguard-go on b: ping and byte-exact TCP both ways (GRO/GSO on both)."""
    import base64

    from tests.lab.peers import WireguardGo, peer_bin

    try:
        peer_bin("wireguard-go")
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    a, b = labpair.link_hosts(lab)
    ka, pa = labpair.new_key()
    wg = WireguardGo(b, lab.ifname(), listen_port=51821, address=f"{TUN_B}/24", address6=f"{TUN_B6}/64").start()
    wg.add_peer(base64.b64encode(pa).decode(), endpoint=f"{labpair.UL_A}:51820",
                allowed_ips=f"{TUN_A}/32,{TUN_A6}/128")
    cfg = {"name": lab.ifname(), "mtu": 1420, "tso": tso, "private_key": ka.hex(), "listen_port": 51820,
           "addresses": [f"{TUN_A}/24", f"{TUN_A6}/64"],
           "peers": [{"public_key": base64.b64decode(wg.public_key).hex(), "endpoint": f"{labpair.UL_B}:51821",
                      "allowed_ips": [f"{TUN_B}/32", f"{TUN_B6}/128"]}]}
    node = labpair.start_node(lab, a, cfg)
    wait_ping(a, TUN_B)
    wait_ping(b, TUN_A)
    wait_ping(a, TUN_B6)
    transfer(lab, a, b, TUN_B, 16 << 20)
    transfer(lab, b, a, TUN_A, 16 << 20)
    transfer(lab, a, b, TUN_B6, 4 << 20)
    st = node.status()
    assert st["peers"][0]["last_handshake"]
    assert not st["counters"].get("worker_crashed")


def test_hostile_datagrams_on_real_socket(lab):
    """Garbage, truncated and 65 KB datagrams at the real UDP socket are counted; the tunnel survives."""
    p = engine_pair(lab)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    a.exec_python(r"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = (sys.argv[1], 51821)
for d in [b"", b"\x04", b"\x01" + bytes(147), b"\x04\0\0\0" + os.urandom(60), os.urandom(1400),
          b"\x02" + os.urandom(91), b"\x03" + os.urandom(63), b"\x09" * 100]:
    s.sendto(d, dst)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
s.sendto(os.urandom(65000), dst)
for _ in range(300):
    s.sendto(b"\x01\0\0\0" + os.urandom(144), dst)
""", labpair.UL_B)
    time.sleep(1.0)
    wait_ping(a, TUN_B)
    c = p.b.status()["counters"]
    drops = sum(v for k, v in c.items() if k.startswith("drop_"))
    assert drops >= 300, c
    assert not c.get("worker_crashed")
