"""Lab: our engine <-> our engine on real TUNs in two namespaces (IPv4 and IPv6 underlay)."""

from __future__ import annotations

import time

import pytest

from tests.dataplane import labpair
from tests.dataplane.labpair import TUN_A, TUN_A6, TUN_B, TUN_B6, engine_pair, wait_ping
from tests.lab import xfer

pytestmark = pytest.mark.lab


def transfer(src, dst, dst_ip: str, size: int, rate: float = 0) -> None:
    """``size`` bytes src -> dst_ip:9000 (a receiver in dst bound to dst_ip); both sides' sha256 must agree."""
    rx = xfer.receiver(dst, 9000, dst_ip)
    sent = xfer.send(src, dst_ip, 9000, size, rate=rate, timeout=120)
    assert xfer.received(rx, timeout=30) == sent and sent[0] == str(size)


@pytest.mark.parametrize("v6", [False, True], ids=["v4-underlay", "v6-underlay"])
def test_ping_and_tcp_transfer(lab, v6):
    p = engine_pair(lab, v6=v6)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    wait_ping(b, TUN_A)
    wait_ping(a, TUN_B6)
    wait_ping(b, TUN_A6)
    transfer(a, b, TUN_B, 20 << 20)
    transfer(b, a, TUN_A6, 5 << 20)
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
    transfer(a, b, TUN_B, 8 << 20, rate=1 << 20)  # ~8 s of paced traffic
    sa, sb = p.a.status(), p.b.status()
    assert sa["peers"][0]["last_handshake"] > first
    completed = sa["counters"].get("handshakes_completed", 0) + sb["counters"].get("handshakes_completed", 0)
    assert completed >= 4, (sa, sb)


def test_tso_reads_segmented(lab):
    """The TSO variant (TUN hands us 64 KiB super-packets) still delivers byte-exact data."""
    p = engine_pair(lab, tso=True)
    a, b = p.a.host, p.b.host
    wait_ping(a, TUN_B)
    transfer(a, b, TUN_B, 10 << 20)
    transfer(a, b, TUN_B6, 3 << 20)


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
    wg.add_peer(base64.b64encode(pa).decode(), endpoint=f"{labpair.UL_A}:51820", allowed_ips=f"{TUN_A}/32,{TUN_A6}/128")
    cfg = labpair.node_cfg(
        lab,
        ka,
        51820,
        (TUN_A, TUN_A6),
        base64.b64decode(wg.public_key),
        f"{labpair.UL_B}:51821",
        (TUN_B, TUN_B6),
        mtu=1420,
        tso=tso,
    )
    node = labpair.start_node(lab, a, cfg)
    wait_ping(a, TUN_B)
    wait_ping(b, TUN_A)
    wait_ping(a, TUN_B6)
    transfer(a, b, TUN_B, 16 << 20)
    transfer(b, a, TUN_A, 16 << 20)
    transfer(a, b, TUN_B6, 4 << 20)
    st = node.status()
    assert st["peers"][0]["last_handshake"]
    assert not st["counters"].get("worker_crashed")


def test_hostile_datagrams_on_real_socket(lab):
    """Garbage, truncated and 65 KB datagrams at the real UDP socket are counted; the tunnel survives."""
    p = engine_pair(lab)
    a = p.a.host
    wait_ping(a, TUN_B)
    a.exec_python(
        r"""
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
""",
        labpair.UL_B,
    )
    time.sleep(1.0)
    wait_ping(a, TUN_B)
    c = p.b.status()["counters"]
    drops = sum(v for k, v in c.items() if k.startswith("drop_"))
    assert drops >= 300, c
    assert not c.get("worker_crashed")
