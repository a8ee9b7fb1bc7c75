"""FilterTun: the packet filter around a Tun (check_out on reads, check_in on writes), with/without offload."""

from __future__ import annotations

import pytest

from engine.dataplane import offload
from engine.dataplane.filtertun import FilterTun
from engine.dataplane.tun_linux import ChannelTun
from engine.filter import Filter
from tests.unit.dataplane.packets import icmp_echo, tcp_packet, udp_packet

ME, PEER, OTHER = "100.64.0.1", "100.64.0.2", "100.64.0.3"
ALLOW_8080_FROM_PEER = [
    {"SrcIPs": [PEER], "DstPorts": [{"IP": ME, "Ports": {"First": 8080, "Last": 8080}}], "IPProto": [6]}
]
SYN, ACK = 0x02, 0x10


@pytest.fixture(autouse=True)
def _testing(monkeypatch):
    monkeypatch.setenv("MESH_TESTING", "1")


def make(vnet: bool, rules=ALLOW_8080_FROM_PEER) -> tuple[FilterTun, ChannelTun]:
    inner = ChannelTun(vnet_hdr=vnet)
    f, errors = Filter.for_netmap(rules, [f"{ME}/32"])
    assert errors == []
    return FilterTun(inner, f), inner


def frame(pkt: bytes, vnet: bool) -> bytes:
    return (offload.ZERO_VNET_HDR if vnet else b"") + pkt


def written(inner: ChannelTun) -> list[bytes]:
    out = []
    while not inner.written.empty():
        out.append(inner.written.get_nowait())
    return out


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "vnet"])
def test_inbound_follows_rules(vnet):
    t, inner = make(vnet)
    ok = tcp_packet(PEER, ME, 40000, 8080, 1, b"", flags=SYN)
    bad_port = tcp_packet(PEER, ME, 40000, 8081, 1, b"", flags=SYN)
    bad_src = tcp_packet(OTHER, ME, 40000, 8080, 1, b"", flags=SYN)
    established = tcp_packet(OTHER, ME, 40000, 22, 1, b"data", flags=ACK)
    ping = icmp_echo(PEER, ME)
    ping_other = icmp_echo(OTHER, ME)
    not_local = tcp_packet(PEER, OTHER, 40000, 8080, 1, b"", flags=SYN)
    for p in (ok, bad_port, bad_src, established, ping, ping_other, not_local):
        t.write([offload.ZERO_VNET_HDR, p] if vnet else [p])
    assert written(inner) == [frame(p, vnet) for p in (ok, established, ping)]
    assert t.dropped_in == 4
    d = {r.value: n for r, n in t.filter.drops.items() if n}
    assert d == {"no-rules-matched": 3, "destination-not-allowed": 1}


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "vnet"])
def test_outbound_records_udp_flows_and_drops_junk(vnet):
    t, inner = make(vnet, rules=[])
    out = udp_packet(ME, PEER, 5353, 53, b"q")
    mcast = udp_packet(ME, "224.0.0.251", 5353, 5353, b"m")
    for p in (mcast, b"\x45" + b"\0" * 10, out):  # multicast and a runt are skipped, the next frame returned
        inner.inject(frame(p, vnet))
    buf = bytearray(2048)
    n = t.read_into(buf)
    assert bytes(buf[:n]) == frame(out, vnet)
    assert t.dropped_out == 2
    assert t.read_into(buf, block=False) == -1  # nothing waiting: same contract as the inner Tun
    # the reply to our UDP query gets in although no rule allows it; an unsolicited one does not
    reply = udp_packet(PEER, ME, 53, 5353, b"a")
    unsolicited = udp_packet(PEER, ME, 53, 5354, b"a")
    t.write([offload.ZERO_VNET_HDR, reply] if vnet else [reply])
    t.write([offload.ZERO_VNET_HDR, unsolicited] if vnet else [unsolicited])
    assert written(inner) == [frame(reply, vnet)]
    inner.close()
    assert t.read_into(buf) == 0


@pytest.mark.parametrize("dst", ["224.0.0.9", "169.254.7.7"])
def test_outbound_tcp_fast_path_still_drops_multicast_and_link_local(dst):
    t, inner = make(True, rules=[])
    ok = tcp_packet(ME, PEER, 40000, 22, 1, b"x", flags=ACK)
    inner.inject(frame(tcp_packet(ME, dst, 40000, 22, 1, b"x", flags=ACK), True))
    inner.inject(frame(ok, True))
    buf = bytearray(2048)
    n = t.read_into(buf)
    assert bytes(buf[:n]) == frame(ok, True) and t.dropped_out == 1


def test_coalesced_tcp_super_packet_checked_once():
    """offload.coalesce output: [gso hdr, ip+tcp header, payloads...] passes or drops as a whole."""
    segs = [tcp_packet(PEER, ME, 40000, 22, 1000 + i * 1000, bytes([i]) * 1000, flags=ACK, ident=i) for i in range(4)]
    frames: list = []
    offload.coalesce([memoryview(bytearray(s)) for s in segs], frames)
    assert len(frames) == 1 and len(frames[0]) == 6 and frames[0][0][1] == offload.GSO_TCPV4
    t, inner = make(True)
    t.write(frames[0])
    (w,) = written(inner)
    assert len(w) == offload.VNET_HDR_LEN + 40 + 4000  # written unchanged: one super-packet
    assert t.filter.accepted_in == 1
    # the same run to an address that is not ours is dropped whole
    segs = [
        tcp_packet(PEER, OTHER, 40000, 22, 1000 + i * 1000, bytes([i]) * 1000, flags=ACK, ident=i) for i in range(4)
    ]
    frames = []
    offload.coalesce([memoryview(bytearray(s)) for s in segs], frames)
    t.write(frames[0])
    assert written(inner) == [] and t.dropped_in == 1


def test_filter_swap_and_attributes():
    t, inner = make(True)
    assert t.vnet_hdr and t.name == inner.name and t.mtu == inner.mtu and t.tso == inner.tso
    syn = tcp_packet(PEER, ME, 40000, 9999, 1, b"", flags=SYN)
    t.write([offload.ZERO_VNET_HDR, syn])
    assert written(inner) == []
    t.set_filter(
        Filter.for_netmap(
            [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}], [f"{ME}/32"]
        )[0]
    )
    t.write([offload.ZERO_VNET_HDR, syn])
    assert written(inner) == [offload.ZERO_VNET_HDR + syn]
