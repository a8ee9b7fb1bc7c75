"""Attack: malformed watch masks (letters, negative, huge, non-ASCII digits) get a counted 400, never a traceback."""

from __future__ import annotations

import json
import socket

import pytest

from tests.helper.attack import counters, raw_request

BAD_MASKS = [
    pytest.param("abc", id="letters"),
    pytest.param("-1", id="negative"),
    pytest.param("18446744073709551616", id="uint64-overflow"),
    pytest.param("9" * 5000, id="5000-digits"),
    pytest.param("%C2%B2", id="superscript-two"),  # "²".isdigit() is True, int("²") raises
    pytest.param("%D9%A3", id="arabic-indic-three"),  # int() would take it; not a decimal the API accepts
    pytest.param("1e3", id="exponent"),
    pytest.param("0x10", id="hex"),
    pytest.param("%201", id="leading-space"),
]


@pytest.mark.parametrize("mask", BAD_MASKS)
def test_malformed_watch_mask_is_a_counted_400(helper, mask):
    before = counters(helper.socket)["Counters"]
    resp = raw_request(helper.socket, "GET", f"/localapi/v0/watch-ipn-bus?mask={mask}")
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:300]
    err = json.loads(resp.partition(b"\r\n\r\n")[2])["Error"]
    assert err.startswith("invalid 'mask' parameter") and "decimal number from 0 to 18446744073709551615" in err
    assert len(err) < 200  # a huge value is not echoed whole
    after = counters(helper.socket)["Counters"]
    assert after["bad_params"] == before["bad_params"] + 1
    assert after["bad_requests"] == before["bad_requests"] + 1
    assert raw_request(helper.socket, "GET", "/localapi/v0/status").startswith(b"HTTP/1.1 200 ")
    assert "Traceback" not in helper.log() and "connection failed" not in helper.log()


def test_largest_mask_is_accepted_and_unknown_bits_ignored(helper):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(helper.socket)
    try:
        s.sendall(
            b"GET /localapi/v0/watch-ipn-bus?mask=18446744073709551615 HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        s.close()
    assert counters(helper.socket)["Counters"]["bad_params"] == 0
