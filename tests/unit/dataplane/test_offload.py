"""Offload helpers: checksum arithmetic, TSO segmentation and GRO-style coalescing round trips."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from engine.dataplane import offload
from tests.unit.dataplane.packets import ref_sum, tcp_checksum_ok, tcp_packet, udp_packet

TS_OPT = b"\x01\x01\x08\x0a" + struct.pack("!II", 111, 222)


@given(st.binary(max_size=3000))
@settings(max_examples=200, deadline=None)
def test_checksum_partial_matches_reference(data):
    got = offload.checksum_partial(data)
    want = ref_sum(data)
    # 0 and 0xFFFF are the same value in ones-complement arithmetic (only all-zero data gives 0)
    assert got % 0xFFFF == want % 0xFFFF
    assert (got == 0) == (not any(data))


@pytest.mark.parametrize("src,dst", [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [1, 1379, 1380, 1381, 5000, 60000])
def test_segment_then_coalesce_round_trip(src, dst, size):
    payload = os.urandom(size)
    mss = 1380 if ":" not in src else 1360
    sp = tcp_packet(src, dst, 40000, 5201, 0xFFFFF000, payload, flags=0x18, options=TS_OPT, partial=True)
    ihl = 20 if ":" not in src else 40
    hl = ihl + 32
    gso = offload.GSO_TCPV4 if ihl == 20 else offload.GSO_TCPV6
    vh = struct.pack("<BBHHHH", offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, gso if size > mss else 0, hl, mss, ihl, 16)
    segs = offload.segment(memoryview(vh + sp))
    assert len(segs) == (size + mss - 1) // mss
    assert all(tcp_checksum_ok(s) for s in segs)
    assert b"".join(s[hl:] for s in segs) == payload
    assert all(s[ihl + 13] == 0x10 for s in segs[:-1]) and segs[-1][ihl + 13] == 0x18
    c = offload.Coalescer()
    for s in segs:
        c.add(memoryview(s))
    frames = c.flush()
    assert len(frames) == 1
    frame = b"".join(bytes(p) for p in frames[0])
    flags, gso_type, hdr_len, gso_size, cs, co = offload.parse_vnet_hdr(frame)
    pkt = bytearray(frame[10:])
    assert bytes(pkt[hl:]) == payload
    if len(segs) == 1:
        assert (flags, gso_type) == (0, 0)
        assert tcp_checksum_ok(bytes(pkt))
    else:
        assert (flags, gso_type, hdr_len, gso_size, cs, co) == (1, gso, hl, mss, ihl, 16)
        offload.complete_checksum(pkt, cs, co)  # what the kernel does with NEEDS_CSUM
        assert tcp_checksum_ok(bytes(pkt))
        assert pkt[ihl + 13] == 0x18


def test_coalescer_keeps_flows_and_non_tcp_apart():
    a = [tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, 1000 + i * 100, b"x" * 100) for i in range(3)]
    b = tcp_packet("10.0.0.1", "10.0.0.2", 1, 3, 1300, b"y" * 100)  # other port
    gap = tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, 5000, b"z" * 100)  # seq gap
    u = udp_packet("10.0.0.1", "10.0.0.2", 1, 2, b"u" * 50)
    syn = tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, 1, b"", flags=0x02)
    c = offload.Coalescer()
    for p in [*a, b, gap, u, syn]:
        c.add(memoryview(p))
    frames = c.flush()
    assert len(frames) == 5
    assert offload.parse_vnet_hdr(bytes(frames[0][0]))[1] == offload.GSO_TCPV4
    assert [len(b"".join(bytes(x) for x in f)) - 10 for f in frames[1:]] == [len(b), len(gap), len(u), len(syn)]
