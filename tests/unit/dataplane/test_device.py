"""Two Devices over ChannelTun + MemoryBind: handshake, traffic both ways, staging, roaming,
keepalives, rekey and drop counters for hostile input (nothing may raise out of a receive loop)."""

from __future__ import annotations

import os
import secrets
import struct
import time

import pytest

from engine.dataplane.bind import MemoryBind
from engine.dataplane.device import Device
from engine.dataplane.endpoint import UdpEndpoint
from engine.dataplane.tun_linux import ChannelTun
from engine.wg.constants import Timings
from tests.lab.netlab import poll_until
from tests.unit.dataplane.packets import icmp_echo, tcp_packet, udp_packet

A_IP, B_IP = "10.77.0.1", "10.77.0.2"
A_IP6, B_IP6 = "fd77::1", "fd77::2"


def wait_for(pred, timeout=10.0, interval=0.01):
    v = poll_until(pred, timeout, interval)
    assert v, "condition not met within %.1fs" % timeout
    return v


def public_of(priv: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return (
        X25519PrivateKey.from_private_bytes(priv)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


class Pair:
    def __init__(self, timings=None, vnet=False, keepalive_b=0):
        self.ka, self.kb = secrets.token_bytes(32), secrets.token_bytes(32)
        self.pa, self.pb = public_of(self.ka), public_of(self.kb)
        self.ta, self.tb = ChannelTun("ta", vnet_hdr=vnet), ChannelTun("tb", vnet_hdr=vnet)
        self.ba, self.bb = MemoryBind.pair()
        self.a = Device("a", tun=self.ta, bind=self.ba, timings=timings)
        self.b = Device("b", tun=self.tb, bind=self.bb, timings=timings)
        self.a.set_private_key(self.ka)
        self.b.set_private_key(self.kb)
        self.a.set_listen_port(51820)
        self.b.set_listen_port(51820)
        self.a.upsert_peer(self.pb, endpoint=str(self.bb.addr), allowed_ips=[f"{B_IP}/32", f"{B_IP6}/128"])
        self.b.upsert_peer(
            self.pa,
            endpoint=str(self.ba.addr),
            allowed_ips=[f"{A_IP}/32", f"{A_IP6}/128"],
            persistent_keepalive=keepalive_b,
        )
        self.a.up()
        self.b.up()

    def close(self):
        self.a.close()
        self.b.close()


@pytest.fixture
def pair():
    p = Pair()
    try:
        yield p
    finally:
        p.close()


def unvnet(frame: bytes, vnet: bool) -> bytes:
    return frame[10:] if vnet else frame


def test_ping_both_ways_v4_v6(pair):
    ping = icmp_echo(A_IP, B_IP, seq=1)
    pair.ta.inject(ping)  # staged until the handshake completes
    assert pair.tb.get_written() == ping
    pong = icmp_echo(B_IP, A_IP, seq=1)
    pair.tb.inject(pong)
    assert pair.ta.get_written() == pong
    ping6 = icmp_echo(A_IP6, B_IP6, seq=2)
    pair.ta.inject(ping6)
    assert pair.tb.get_written() == ping6
    pong6 = icmp_echo(B_IP6, A_IP6, seq=2)
    pair.tb.inject(pong6)
    assert pair.ta.get_written() == pong6
    (sa,), (sb,) = pair.a.peers(), pair.b.peers()
    assert sa.last_handshake and sb.last_handshake
    assert sa.tx_bytes > 0 and sa.rx_bytes > 0
    assert pair.a.counters().get("handshakes_completed", 0) + pair.b.counters().get("handshakes_completed", 0) >= 2


def test_packets_queued_before_handshake_all_arrive(pair):
    pkts = [udp_packet(A_IP, B_IP, 1000, 2000, bytes([i]) * (10 + i)) for i in range(20)]
    for p in pkts:
        pair.ta.inject(p)
    got = [pair.tb.get_written() for _ in pkts]
    assert got == pkts


def test_padding_is_trimmed_and_sizes_vary(pair):
    pkts = [udp_packet(A_IP, B_IP, 1, 2, os.urandom(n)) for n in (1, 15, 16, 17, 100, 1371, 1392)]
    for p in pkts:
        pair.ta.inject(p)
    assert [pair.tb.get_written() for _ in pkts] == pkts


def test_no_route_is_counted(pair):
    pair.ta.inject(icmp_echo(A_IP, "10.99.0.9"))
    wait_for(lambda: pair.a.counters().get("drop_no_route"))


def test_disallowed_inner_source_is_dropped(pair):
    pair.ta.inject(icmp_echo(A_IP, B_IP))
    pair.tb.get_written()
    pair.ta.inject(udp_packet("10.77.0.3", B_IP, 1, 2, b"spoof"))  # a's device routes it (dst ok)
    wait_for(lambda: pair.b.counters().get("drop_disallowed_source"))


def test_roaming_updates_endpoint(pair):
    pair.ta.inject(icmp_echo(A_IP, B_IP))
    pair.tb.get_written()
    new = UdpEndpoint.parse("192.0.2.77:40000")
    pair.ba.rebind_source(new)
    pair.ta.inject(icmp_echo(A_IP, B_IP, seq=2))
    pair.tb.get_written()
    wait_for(lambda: pair.b.peers()[0].endpoint == new)
    pair.tb.inject(icmp_echo(B_IP, A_IP, seq=3))  # the reply must go to the new address
    assert pair.ta.get_written() == icmp_echo(B_IP, A_IP, seq=3)


def test_persistent_keepalive_sent():
    p = Pair()
    try:
        p.ta.inject(icmp_echo(A_IP, B_IP))
        p.tb.get_written()
        p.b.upsert_peer(p.pa, persistent_keepalive=1)
        rx0 = p.a.peers()[0].rx_bytes
        wait_for(lambda: p.a.peers()[0].rx_bytes >= rx0 + 64, timeout=5)  # >= 2 keepalives of 32 B
    finally:
        p.close()


def test_rekey_observed_while_traffic_continues():
    t = Timings(rekey_after_time=1.0, reject_after_time=6.0, keepalive_timeout=1.0, rekey_timeout=1.0)
    p = Pair(timings=t)
    try:
        first = None
        for i in range(60):
            pkt = udp_packet(A_IP, B_IP, 1, 2, struct.pack("!I", i))
            p.ta.inject(pkt)
            assert p.tb.get_written() == pkt
            first = first or p.a.peers()[0].last_handshake
            time.sleep(0.05)
        assert p.a.peers()[0].last_handshake > first
        assert p.a.counters().get("handshakes_completed", 0) >= 2
    finally:
        p.close()


def test_receiving_initiator_rekeys_in_the_last_minute_via_the_batch_hook():
    """a initiates, then only receives: its fast path's once-per-batch bookkeeping
    (core.note_received) must start the last-minute rekey (age > 4 - 1 - 1 = 2 s)."""
    t = Timings(rekey_after_time=100.0, reject_after_time=4.0, keepalive_timeout=1.0, rekey_timeout=1.0)
    p = Pair(timings=t)
    try:
        p.ta.inject(icmp_echo(A_IP, B_IP))
        p.tb.get_written()
        for i in range(70):  # ~3.5 s of b -> a traffic, past the 4 s the first session lives
            pkt = udp_packet(B_IP, A_IP, 1, 2, struct.pack("!I", i))
            p.tb.inject(pkt)
            assert p.ta.get_written() == pkt
            time.sleep(0.05)
        assert p.a.counters().get("handshake_initiations_sent", 0) >= 2
        assert p.a.counters().get("handshakes_completed", 0) >= 2
    finally:
        p.close()


def test_tcp_burst_coalesced_on_vnet_tun():
    p = Pair(vnet=True)
    try:
        hdr = bytes(10)
        p.ta.inject(hdr + icmp_echo(A_IP, B_IP))
        assert p.tb.get_written()[10:] == icmp_echo(A_IP, B_IP)
        segs = [tcp_packet(A_IP, B_IP, 40000, 5201, 1000 + i * 1380, os.urandom(1380)) for i in range(10)]
        for s in segs:
            p.ta.inject(hdr + s)
        got = []
        while sum(len(g) - 10 - 40 for g in got) < 13800:
            got.append(p.tb.get_written())
        payload = b"".join(g[50:] for g in got)
        assert payload == b"".join(s[40:] for s in segs)
        assert any(g[1] == 1 for g in got) or len(got) == 10  # GSO frames when batched
    finally:
        p.close()


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x04",
        b"\x04\0\0\0" + bytes(12),
        b"\x04\0\0\0" + os.urandom(40),
        b"\x09" + os.urandom(100),
        b"\x01" + bytes(147),
        b"\x01" + os.urandom(200),
        b"\x02" + bytes(91),
        b"\x03" + bytes(63),
        os.urandom(65000),
        os.urandom(1),
        b"\x01\0\0\0" + os.urandom(144),
    ],
    ids=lambda b: f"{len(b)}B-{b[:1].hex()}",
)
def test_garbage_is_counted_not_raised(pair, junk):
    pair.bb.inject(junk, UdpEndpoint.parse("192.0.2.66:1234"))
    wait_for(lambda: sum(v for k, v in pair.b.counters().items() if k.startswith("drop_")) >= 1 or not junk[:1])
    assert not pair.b.counters().get("worker_crashed")
    pair.ta.inject(icmp_echo(A_IP, B_IP))
    assert pair.tb.get_written() == icmp_echo(A_IP, B_IP)


def test_replayed_transport_packets_counted(pair):
    pair.ta.inject(icmp_echo(A_IP, B_IP))
    pair.tb.get_written()
    pair.ta.inject(udp_packet(A_IP, B_IP, 5, 6, b"once"))
    pair.tb.get_written()
    sent = [d for d, _ in pair.ba.sent if d[0] == 4 and len(d) > 32]
    for d in sent:
        pair.bb.inject(d, pair.ba.addr)
    wait_for(lambda: pair.b.counters().get("drop_replay", 0) >= len(sent))
    with pytest.raises(Exception):
        pair.tb.get_written(timeout=0.3)


def test_bad_mac1_and_handshake_flood_counted(pair):
    pair.ta.inject(icmp_echo(A_IP, B_IP))
    pair.tb.get_written()
    inits = [d for d, _ in pair.ba.sent if d[0] == 1]
    assert inits
    bad = bytearray(inits[0])
    bad[-20] ^= 1  # mac1 covers everything before it
    pair.bb.inject(bytes(bad), pair.ba.addr)
    wait_for(lambda: pair.b.counters().get("drop_bad_mac1"))
    src = UdpEndpoint.parse("192.0.2.99:999")
    for _ in range(400):  # flood: valid mac1, replayed initiation from a spoofed source
        pair.bb.inject(inits[0], src)
    wait_for(
        lambda: (
            sum(
                v
                for k, v in pair.b.counters().items()
                if k
                in (
                    "drop_cookie_sent",
                    "drop_replayed_timestamp",
                    "drop_rate_limited",
                    "drop_initiation_flood",
                    "drop_handshake_queue_full",
                )
            )
            >= 300
        ),
        timeout=30,
    )
    assert not pair.b.counters().get("worker_crashed")
    # the real peer still gets through
    pair.ta.inject(icmp_echo(A_IP, B_IP, seq=9))
    assert pair.tb.get_written(timeout=10) == icmp_echo(A_IP, B_IP, seq=9)


def test_close_is_idempotent_and_config_api():
    p = Pair()
    p.a.upsert_peer(p.pb, allowed_ips=["10.1.0.0/16"])
    st = p.a.peers()[0]
    assert {str(n) for n in st.allowed_ips} == {f"{B_IP}/32", f"{B_IP6}/128", "10.1.0.0/16"}
    p.a.upsert_peer(
        p.pb,
        allowed_ips=["10.2.0.0/16"],
        replace_allowed_ips=True,
        persistent_keepalive=25,
        preshared_key=bytes(range(32)),
    )
    st = p.a.peers()[0]
    assert [str(n) for n in st.allowed_ips] == ["10.2.0.0/16"]
    assert st.persistent_keepalive == 25 and st.preshared_key == bytes(range(32))
    p.a.remove_peer(p.pb)
    assert p.a.peers() == []
    p.close()
    p.close()
