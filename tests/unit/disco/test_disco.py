"""Disco codec and box: byte layouts, seal/open round trip, tamper, unknown keys, fuzz."""

from __future__ import annotations

import os

import nacl.public
import pytest
from hypothesis import given, settings, strategies as st

from engine.disco import box as dbox
from engine.disco.message import CallMeMaybe, DiscoParseError, Ping, Pong, parse

TX = bytes(range(1, 13))
NK = bytes(range(32))


@pytest.mark.parametrize(
    "msg,want_hex",
    [
        pytest.param(Ping(txid=TX), "0100" + TX.hex(), id="ping_no_key"),
        pytest.param(Ping(txid=TX, node_key=NK), "0100" + TX.hex() + NK.hex(), id="ping_key"),
        pytest.param(Ping(txid=TX, node_key=NK, padding=3), "0100" + TX.hex() + NK.hex() + "000000", id="ping_pad"),
        pytest.param(
            Pong(txid=TX, src=("2.3.4.5", 1234)),
            "0200" + TX.hex() + "00000000000000000000ffff02030405" + "04d2",
            id="pong_v4",
        ),
        pytest.param(
            Pong(txid=TX, src=("fed0::12", 6666)),
            "0200" + TX.hex() + "fed00000000000000000000000000012" + "1a0a",
            id="pong_v6",
        ),
        pytest.param(
            CallMeMaybe(endpoints=(("1.2.3.4", 567), ("2001:db8::1", 89))),
            "0300" + "00000000000000000000ffff01020304" + "0237" + "20010db8000000000000000000000001" + "0059",
            id="cmm",
        ),
    ],
)
def test_marshal_parse(msg, want_hex):
    b = msg.marshal()
    assert b.hex() == want_hex
    assert parse(b) == msg


def test_parse_short_and_unknown():
    with pytest.raises(DiscoParseError, match="too short"):
        parse(b"\x01")
    with pytest.raises(DiscoParseError, match="ping too short"):
        parse(b"\x01\x00abc")
    assert parse(b"\x7f\x00whatever") is None
    assert parse(b"\x03\x00" + b"\x00" * 17) == CallMeMaybe(endpoints=())  # ignored, like tailscale
    assert parse(b"\x03\x01" + Pong(TX, ("1.1.1.1", 1)).marshal()[14:]) == CallMeMaybe(endpoints=())


def _crypto(priv=None):
    return dbox.DiscoCrypto(private=priv or nacl.public.PrivateKey.generate(), random=os.urandom)


def test_seal_open_round_trip_and_layout():
    a, b = _crypto(), _crypto()
    pkt = a.seal(b.public, Ping(txid=TX, node_key=NK))
    assert pkt[:6] == b"TS\xf0\x9f\x92\xac" and pkt[6:38] == a.public
    assert len(pkt) == 6 + 32 + 24 + 16 + 2 + 12 + 32
    assert dbox.looks_like_disco(pkt)
    got = b.open(pkt, known=lambda k: k == a.public)
    assert got == (a.public, Ping(txid=TX, node_key=NK))
    assert b.counters.opened == 1


def test_unknown_sender_dropped_and_counted():
    a, b = _crypto(), _crypto()
    pkt = a.seal(b.public, Pong(TX, ("1.2.3.4", 5)))
    assert b.open(pkt, known=lambda k: False) is None
    assert b.counters.unknown_sender == 1


def test_wrong_recipient_bad_box():
    a, b, c = _crypto(), _crypto(), _crypto()
    pkt = a.seal(c.public, Pong(TX, ("1.2.3.4", 5)))
    assert b.open(pkt, known=lambda k: True) is None
    assert b.counters.bad_box == 1


def test_tamper_every_byte_after_header():
    a, b = _crypto(), _crypto()
    pkt = a.seal(b.public, CallMeMaybe(endpoints=(("1.2.3.4", 5),)))
    for i in range(38, len(pkt)):
        t = bytearray(pkt)
        t[i] ^= 0x40
        assert b.open(bytes(t), known=lambda k: True) is None
    assert b.counters.bad_box == len(pkt) - 38
    assert b.open(pkt, known=lambda k: True) is not None


def test_shared_key_cached():
    a, b = _crypto(), _crypto()
    for _ in range(3):
        a.seal(b.public, Ping(TX))
    assert len(a._boxes) == 1
    a.forget(b.public)
    assert len(a._boxes) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_open_never_raises(data):
    b = _FUZZ
    b.open(dbox.MAGIC + data, known=lambda k: True)
    b.open(data, known=lambda k: True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_fuzz_parse_only_parse_error(data):
    try:
        parse(data)
    except DiscoParseError:
        pass


_FUZZ = _crypto()
