"""ts2021 transport pieces: upgrade request/response, early payload (present/absent/split/bad)."""

import base64
import json
import struct

import pytest

from engine.control import transport as T
from engine.control.noise import RemoteProtocolError

CHAL = "chalpub:" + "cd" * 32


def test_upgrade_request_headers():
    init = bytes(range(101))
    req = T.build_upgrade_request("192.0.2.1:8080", init).decode()
    head, _, _ = req.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "POST /ts2021 HTTP/1.1"
    hdrs = dict(line.split(": ", 1) for line in lines[1:])
    assert hdrs["Upgrade"] == "tailscale-control-protocol"
    assert hdrs["Connection"] == "upgrade"
    assert hdrs["Host"] == "192.0.2.1:8080"
    assert base64.b64decode(hdrs["X-Tailscale-Handshake"]) == init


def test_upgrade_response_checks():
    T.check_upgrade_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade"
    )
    with pytest.raises(T.UpgradeError, match="HTTP 400 Bad Request"):
        T.check_upgrade_response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0")
    with pytest.raises(T.ControlTransportError, match="server answered Upgrade: 'websocket'"):
        T.check_upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket")
    with pytest.raises(T.ControlTransportError, match="malformed HTTP response line"):
        T.check_upgrade_response(b"garbage")


def test_server_url():
    assert T.ServerURL.parse("http://192.0.2.1:8080").authority == "192.0.2.1:8080"
    assert T.ServerURL.parse("https://hs.example").port == 443
    assert T.ServerURL.parse("https://hs.example").authority == "hs.example"
    with pytest.raises(ValueError):
        T.ServerURL.parse("ftp://x")


H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS frame (9 bytes)


def test_early_payload_present_then_h2():
    p = T.EarlyPayloadParser()
    wire = T.encode_early_payload({"nodeKeyChallenge": CHAL}) + H2_SETTINGS
    for i in range(len(wire)):
        p.feed(wire[i : i + 1])
    assert p.done
    assert str(p.early.node_key_challenge) == CHAL
    assert p.rest == H2_SETTINGS


def test_early_payload_absent():
    p = T.EarlyPayloadParser()
    p.feed(H2_SETTINGS[:3])
    assert p.done and p.early is None  # first byte is not 0xff: decided early
    p.feed(H2_SETTINGS[3:])
    assert p.rest == H2_SETTINGS


def test_early_payload_absent_partial_magic():
    p = T.EarlyPayloadParser()
    p.feed(b"\xff\xff")
    assert not p.done
    p.feed(b"\x00" + bytes(6))
    assert p.done and p.early is None and p.rest == b"\xff\xff" + bytes(7)


def test_early_payload_too_large():
    p = T.EarlyPayloadParser()
    with pytest.raises(RemoteProtocolError, match="early payload too large"):
        p.feed(T.EARLY_PAYLOAD_MAGIC + struct.pack(">I", (10 << 20) + 1))


@pytest.mark.parametrize(
    "body,msg",
    [
        (b"{not json", "invalid JSON"),
        (json.dumps({"nodeKeyChallenge": "nodekey:" + "00" * 32}).encode(), "missing prefix 'chalpub:'"),
        (b"[]", "want object"),
    ],
)
def test_early_payload_bad_json(body, msg):
    p = T.EarlyPayloadParser()
    with pytest.raises(RemoteProtocolError, match=msg):
        p.feed(T.EARLY_PAYLOAD_MAGIC + struct.pack(">I", len(body)) + body)


def test_early_payload_unknown_fields_ignored():
    p = T.EarlyPayloadParser()
    p.feed(T.encode_early_payload({"nodeKeyChallenge": CHAL, "future": 1}))
    assert p.done and p.early is not None


def test_dechunk():
    assert T._dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n") == b"abcde"
