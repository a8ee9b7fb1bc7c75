"""Wire formats: byte-exact round trips, exact parse errors, and a parser fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.wg import messages as m
from engine.wg.messages import CookieReply, Initiation, MessageParseError, Response, Transport


def _b(n: int, start: int) -> bytes:
    return bytes((start + i) & 0xFF for i in range(n))


INIT = Initiation(0x11223344, _b(32, 0), _b(48, 0x40), _b(28, 0x80), _b(16, 0xA0), _b(16, 0xB0))
INIT_HEX = (
    "01000000"
    + "44332211"
    + _b(32, 0).hex()
    + _b(48, 0x40).hex()
    + _b(28, 0x80).hex()
    + _b(16, 0xA0).hex()
    + _b(16, 0xB0).hex()
)
RESP = Response(0x01020304, 0xA0B0C0D0, _b(32, 1), _b(16, 2), _b(16, 3), _b(16, 4))
RESP_HEX = "02000000" + "04030201" + "d0c0b0a0" + _b(32, 1).hex() + _b(16, 2).hex() + _b(16, 3).hex() + _b(16, 4).hex()
COOKIE = CookieReply(0xDEADBEEF, _b(24, 9), _b(32, 10))
COOKIE_HEX = "03000000" + "efbeadde" + _b(24, 9).hex() + _b(32, 10).hex()
TRANSPORT = Transport(7, 0x0102030405060708, _b(20, 5))
TRANSPORT_HEX = "04000000" + "07000000" + "0807060504030201" + _b(20, 5).hex()


@pytest.mark.parametrize(
    "msg,hex_,size",
    [
        pytest.param(INIT, INIT_HEX, m.SIZE_INITIATION, id="initiation"),
        pytest.param(RESP, RESP_HEX, m.SIZE_RESPONSE, id="response"),
        pytest.param(COOKIE, COOKIE_HEX, m.SIZE_COOKIE_REPLY, id="cookie_reply"),
        pytest.param(TRANSPORT, TRANSPORT_HEX, 36, id="transport"),
    ],
)
def test_roundtrip_byte_exact(msg, hex_, size):
    wire = msg.marshal()
    assert wire.hex() == hex_
    assert len(wire) == size
    assert type(msg).parse(wire) == msg
    assert m.parse(wire) == msg


def test_sizes():
    assert (m.SIZE_INITIATION, m.SIZE_RESPONSE, m.SIZE_COOKIE_REPLY, m.SIZE_TRANSPORT_HEADER) == (148, 92, 64, 16)
    assert m.SIZE_KEEPALIVE == 32
    assert m.MAC1_OFFSET_INITIATION == 148 - 32 and m.MAC1_OFFSET_RESPONSE == 92 - 32


@pytest.mark.parametrize(
    "cls,data,text",
    [
        pytest.param(Initiation, bytes(147), "initiation: length 147, want 148 bytes", id="init_short"),
        pytest.param(Response, bytes(93), "response: length 93, want 92 bytes", id="resp_long"),
        pytest.param(CookieReply, b"\x03" + bytes(62), "cookie reply: length 63, want 64 bytes", id="cookie_short"),
        pytest.param(
            Transport, b"\x04" + bytes(30), "transport: length 31, want at least 32 bytes", id="transport_short"
        ),
        pytest.param(
            Initiation,
            b"\x02" + bytes(147),
            "initiation: type field is 2 with reserved bytes 000000, want 1 and 000000",
            id="init_type",
        ),
        pytest.param(
            Transport,
            b"\x04\x00\x01\x00" + bytes(40),
            "transport: type field is 4 with reserved bytes 000100, want 4 and 000000",
            id="reserved",
        ),
    ],
)
def test_parse_errors_name_field_and_size(cls, data, text):
    with pytest.raises(MessageParseError) as e:
        cls.parse(data)
    assert str(e.value) == text


def test_generic_parse_errors():
    with pytest.raises(MessageParseError, match=r"^message: length 2, want at least 4 bytes$"):
        m.parse(b"\x01\x00")
    with pytest.raises(MessageParseError, match=r"^message: type field is 9, want 1, 2, 3 or 4$"):
        m.parse(b"\x09\x00\x00\x00")
    assert issubclass(MessageParseError, ValueError)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(lambda t, rest: bytes([t, 0, 0, 0]) + rest, st.integers(0, 5), st.binary(max_size=160)),
    )
)
def test_parse_fuzz_only_raises_parse_error(data):
    try:
        msg = m.parse(data)
    except MessageParseError:
        return
    assert msg.marshal() == data
