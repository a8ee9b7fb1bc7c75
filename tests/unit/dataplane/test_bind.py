"""UdpBind on loopback: dual-stack open, GSO send / GRO receive (or their fallbacks), endpoints, close."""

from __future__ import annotations

import os
import threading

import pytest

from engine.dataplane.bind import MemoryBind, UdpBind
from engine.dataplane.endpoint import UdpEndpoint, as_endpoint


def recv_datagrams(bind: UdpBind, count: int) -> list[tuple[bytes, object]]:
    buf = bytearray(65536 + 64)
    out = []
    while len(out) < count:
        n, seg, ep = bind.recv_into(buf)
        assert n > 0
        for off in range(0, n, seg):
            out.append((bytes(buf[off : min(off + seg, n)]), ep))
    return out


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "nogso"])
def test_batch_send_receive(host, gso):
    a, b = UdpBind(gso=gso), UdpBind()
    try:
        a.open(0)
        pb = b.open(0)
        dst = UdpEndpoint.of(host, pb)
        dgrams = [os.urandom(1000) for _ in range(20)] + [os.urandom(300)]
        a.send([b"".join(dgrams)], dst, seg=1000)
        a.send([b"x" * 10, b"y" * 20], dst)  # seg=0: one datagram per part
        got = recv_datagrams(b, len(dgrams) + 2)
        assert [d for d, _ in got] == dgrams + [b"x" * 10, b"y" * 20]
        assert {ep for _, ep in got} == {UdpEndpoint.of(host, a.port)}
    finally:
        a.close()
        b.close()


def test_close_unblocks_receiver_and_is_idempotent():
    b = UdpBind()
    b.open(0)
    res = []
    t = threading.Thread(target=lambda: res.append(b.recv_into(bytearray(2048))))
    t.start()
    b.close()
    b.close()
    t.join(5)
    assert res == [(0, 0, None)]


def test_rebind_changes_port():
    b = UdpBind()
    try:
        p1 = b.open(0)
        p2 = b.open(0)
        assert p1 and p2 and b.port == p2
    finally:
        b.close()


@pytest.mark.parametrize(
    "text,want",
    [
        ("1.2.3.4:5", ("1.2.3.4", 5)),
        ("[fd00::1]:51820", ("fd00::1", 51820)),
        ("[::ffff:1.2.3.4]:7", ("1.2.3.4", 7)),
    ],
)
def test_endpoint_parse(text, want):
    ep = UdpEndpoint.parse(text)
    assert tuple(ep) == want
    assert UdpEndpoint.parse(str(ep)) == ep
    assert as_endpoint(want) == ep


@pytest.mark.parametrize("bad", ["1.2.3.4", "fd00::1:5", "[fd00::1]5", "x:1", "1.2.3.4:70000"])
def test_endpoint_parse_errors(bad):
    with pytest.raises(ValueError):
        UdpEndpoint.parse(bad)


def test_fakes_refuse_without_testing_env(monkeypatch):
    monkeypatch.setenv("MESH_TESTING", "0")
    with pytest.raises(RuntimeError):
        MemoryBind.pair()
    from engine.dataplane.tun_linux import ChannelTun

    with pytest.raises(RuntimeError):
        ChannelTun()
