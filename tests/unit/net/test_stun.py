"""STUN codec: RFC 5769 vectors, tailscale-style requests, txid checks, fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from engine.net import stun


def hx(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# https://www.rfc-editor.org/rfc/rfc5769 §2.1 Sample Request
RFC5769_REQUEST = hx("""
00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
80 28 00 04 e5 7a 3b cf""")
# §2.2 Sample IPv4 Response: XOR-MAPPED-ADDRESS 192.0.2.1:32853
RFC5769_V4 = hx("""
01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
00 20 00 08 00 01 a1 47 e1 12 a6 43
00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
80 28 00 04 c0 7d 4c 96""")
# §2.3 Sample IPv6 Response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853
RFC5769_V6 = hx("""
01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
80 28 00 04 c8 fb 0b 4c""")
TXID = hx("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")


@pytest.mark.parametrize("msg", [RFC5769_REQUEST, RFC5769_V4, RFC5769_V6], ids=["request", "v4", "v6"])
def test_rfc5769_fingerprint(msg):
    want = struct.unpack("!I", msg[-4:])[0]
    assert stun.fingerprint(msg[:-8]) == want
    stun.parse_message(msg)  # checks lengths and the fingerprint


def test_rfc5769_v4_response():
    r = stun.parse_response(RFC5769_V4, want_txid=TXID)
    assert r.addr == ("192.0.2.1", 32853)


def test_rfc5769_v6_response():
    r = stun.parse_response(RFC5769_V6, want_txid=TXID)
    assert r.addr == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_wrong_txid_rejected():
    with pytest.raises(stun.StunParseError, match="transaction ID mismatch"):
        stun.parse_response(RFC5769_V4, want_txid=b"\x00" * 12)


def test_bad_fingerprint_rejected():
    bad = RFC5769_V4[:-1] + bytes([RFC5769_V4[-1] ^ 1])
    with pytest.raises(stun.StunParseError, match="FINGERPRINT mismatch"):
        stun.parse_response(bad)


def test_request_layout():
    txid = bytes(range(12))
    req = stun.build_request(txid)
    assert len(req) == stun.REQUEST_LEN == 40
    assert req[:4] == b"\x00\x01\x00\x14"
    assert req[4:8] == stun.MAGIC_COOKIE
    assert req[8:20] == txid
    assert req[20:32] == b"\x80\x22\x00\x08tailnode"
    assert req[32:36] == b"\x80\x28\x00\x04"
    assert stun.parse_binding_request(req) == txid
    assert stun.is_stun(req) and not stun.is_binding_response(req)


def test_response_round_trip_v4_v6():
    for addr in [("203.0.113.7", 41641), ("2001:db8::5", 1)]:
        b = stun.build_response(TXID, addr)
        assert stun.is_binding_response(b)
        assert stun.parse_response(b, TXID).addr == addr


def test_request_without_software_rejected_by_server_parser():
    b = struct.pack("!HH", 1, 8) + stun.MAGIC_COOKIE + TXID
    b += struct.pack("!HHI", stun.ATTR_FINGERPRINT, 4, stun.fingerprint(b))
    with pytest.raises(stun.StunParseError, match="SOFTWARE"):
        stun.parse_binding_request(b)


def test_mapped_address_fallback():
    value = struct.pack("!BBH", 0, 1, 5000) + bytes([198, 51, 100, 9])
    attrs = struct.pack("!HH", stun.ATTR_MAPPED_ADDRESS, len(value)) + value
    b = struct.pack("!HH", stun.BINDING_SUCCESS, len(attrs)) + stun.MAGIC_COOKIE + TXID + attrs
    assert stun.parse_response(b).addr == ("198.51.100.9", 5000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_parse_only_raises_parse_error(data):
    for b in (data, stun.MAGIC_COOKIE.join([b"\x01\x01\x00\x00", data])):
        try:
            stun.parse_response(b)
        except stun.StunParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(RFC5769_V4) - 1), st.integers(1, 255))
def test_tamper_never_crashes(i, x):
    b = bytearray(RFC5769_V4)
    b[i] ^= x
    try:
        stun.parse_response(bytes(b))
    except stun.StunParseError:
        pass
