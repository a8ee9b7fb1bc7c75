"""DERP frames and client state machine: round trips, login against an in-memory server, fuzz."""

from __future__ import annotations

import json
import os
import struct

import nacl.public
import pytest
from hypothesis import given, settings, strategies as st

from engine.derp import frames as f, protocol as p

K1 = bytes(range(32))


def test_send_packet_layout():
    b = f.encode_send_packet(K1, b"hello")
    assert b == b"\x04\x00\x00\x00\x25" + K1 + b"hello"
    with pytest.raises(ValueError, match="packet too big"):
        f.encode_send_packet(K1, b"x" * (f.MAX_PACKET_SIZE + 1))


@pytest.mark.parametrize(
    "ftype,payload,want",
    [
        pytest.param(f.FrameType.SERVER_KEY, f.MAGIC + K1 + b"extra", f.ServerKey(K1), id="server_key"),
        pytest.param(f.FrameType.RECV_PACKET, K1 + b"pkt", f.RecvPacket(K1, b"pkt"), id="recv"),
        pytest.param(f.FrameType.KEEP_ALIVE, b"", f.KeepAlive(), id="keepalive"),
        pytest.param(f.FrameType.PEER_GONE, K1, f.PeerGone(K1, 0), id="peer_gone_old"),
        pytest.param(f.FrameType.PEER_GONE, K1 + b"\x01", f.PeerGone(K1, 1), id="peer_gone_not_here"),
        pytest.param(f.FrameType.PEER_PRESENT, K1, f.PeerPresent(K1), id="peer_present"),
        pytest.param(f.FrameType.PING, b"12345678", f.Ping(b"12345678"), id="ping"),
        pytest.param(f.FrameType.PONG, b"12345678", f.Pong(b"12345678"), id="pong"),
        pytest.param(f.FrameType.HEALTH, b"bad", f.Health("bad"), id="health"),
        pytest.param(f.FrameType.RESTARTING, struct.pack("!II", 1500, 3000), f.Restarting(1.5, 3.0), id="restart"),
        pytest.param(0x55, b"zz", f.UnknownFrame(0x55, 2), id="unknown"),
    ],
)
def test_parse_frames(ftype, payload, want):
    r = f.FrameReader()
    r.feed(f.encode_frame(ftype, payload)[:3])
    assert r.next_frame() is None
    r.feed(f.encode_frame(ftype, payload)[3:])
    t, pl = r.next_frame()
    assert f.parse_frame(t, pl) == want


@pytest.mark.parametrize(
    "ftype,payload,msg",
    [
        (f.FrameType.SERVER_KEY, b"DERP", "ServerKey frame too short (4 bytes)"),
        (f.FrameType.SERVER_KEY, b"X" * 40, "ServerKey frame has bad magic"),
        (f.FrameType.RECV_PACKET, b"x", "RecvPacket frame too short (1 bytes)"),
        (f.FrameType.RESTARTING, b"x", "Restarting frame too short (1 bytes)"),
    ],
)
def test_parse_errors_exact(ftype, payload, msg):
    with pytest.raises(f.DerpFrameError) as e:
        f.parse_frame(ftype, payload)
    assert str(e.value) == msg


def test_oversized_frame_rejected():
    r = f.FrameReader()
    r.feed(struct.pack("!BI", 5, f.MAX_FRAME_SIZE + 1))
    with pytest.raises(f.DerpFrameError, match="too large"):
        r.next_frame()


class FakeServer:
    """Just enough of a DERP server to drive the client core (in memory)."""

    def __init__(self):
        self.priv = nacl.public.PrivateKey.generate()
        self.client_pub = None
        self.reader = f.FrameReader()
        self.client_info = None

    def hello(self) -> bytes:
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n" + f.encode_frame(
            f.FrameType.SERVER_KEY, f.MAGIC + bytes(self.priv.public_key)
        )

    def receive(self, data: bytes) -> list:
        self.reader.feed(data)
        out = []
        while (fr := self.reader.next_frame()) is not None:
            t, pl = fr
            if t == f.FrameType.CLIENT_INFO:
                self.client_pub = pl[:32]
                box = nacl.public.Box(self.priv, nacl.public.PublicKey(self.client_pub))
                self.client_info = json.loads(box.decrypt(pl[32:]))
            out.append((t, pl))
        return out

    def server_info(self) -> bytes:
        box = nacl.public.Box(self.priv, nacl.public.PublicKey(self.client_pub))
        return f.encode_frame(f.FrameType.SERVER_INFO, bytes(box.encrypt(b'{"version":2}', os.urandom(24))))


def _login():
    client = p.DerpClientConn(private_key=nacl.public.PrivateKey.generate(), host="derp.test", random=os.urandom)
    srv = FakeServer()
    client.start(now=0.0)
    req = client.data_to_send()
    assert req.startswith(b"GET /derp HTTP/1.1\r\n") and b"Upgrade: DERP\r\n" in req
    assert b"Connection: Upgrade\r\n" in req
    evs = client.receive_data(srv.hello(), now=1.0)
    assert evs == [p.Connected(server_key=bytes(srv.priv.public_key))]
    srv.receive(client.data_to_send())
    assert srv.client_pub == client.public_key
    assert srv.client_info == {"version": 2, "CanAckPings": True}
    evs = client.receive_data(srv.server_info(), now=2.0)
    assert evs == [p.ServerInfo(info={"version": 2})]
    return client, srv


def test_login_and_packets():
    client, srv = _login()
    assert client.send_packet(K1, b"wg")
    assert srv.receive(client.data_to_send()) == [(f.FrameType.SEND_PACKET, K1 + b"wg")]
    evs = client.receive_data(f.encode_frame(f.FrameType.RECV_PACKET, K1 + b"in"), now=3.0)
    assert evs == [p.PacketReceived(K1, b"in")]
    # server ping is answered with pong
    assert client.receive_data(f.encode_frame(f.FrameType.PING, b"abcdefgh"), now=3.0) == []
    assert srv.receive(client.data_to_send()) == [(f.FrameType.PONG, b"abcdefgh")]
    client.note_preferred(True)
    assert srv.receive(client.data_to_send()) == [(f.FrameType.NOTE_PREFERRED, b"\x01")]
    # unknown frames are skipped by length
    assert client.receive_data(f.encode_frame(0x77, b"xyz"), now=3.0) == []
    assert client.counters.unknown_frames == 1


def test_read_timeout_closes():
    client, _ = _login()
    assert client.get_timer() == 2.0 + p.READ_TIMEOUT
    assert client.handle_timer(50.0) == []
    evs = client.handle_timer(2.0 + p.READ_TIMEOUT)
    assert isinstance(evs[0], p.Closed) and client.state is p.State.CLOSED
    assert client.send_packet(K1, b"x") is False


def test_upgrade_refused():
    client = p.DerpClientConn(private_key=nacl.public.PrivateKey.generate(), host="h", random=os.urandom)
    client.start(0.0)
    evs = client.receive_data(b"HTTP/1.1 426 Upgrade Required\r\n\r\n", 0.0)
    assert evs == [p.Closed(reason="DERP upgrade refused: HTTP 426 Upgrade Required", malformed=True)]


def test_bad_server_info_box_closes():
    client, srv = _login()
    evs = client.receive_data(f.encode_frame(f.FrameType.SERVER_INFO, os.urandom(60)), 3.0)
    assert isinstance(evs[-1], p.Closed) and evs[-1].malformed
    assert client.counters.malformed == 1


def test_first_frame_must_be_server_key():
    client = p.DerpClientConn(private_key=nacl.public.PrivateKey.generate(), host="h", random=os.urandom)
    client.start(0.0)
    evs = client.receive_data(b"HTTP/1.1 101 OK\r\n\r\n" + f.encode_frame(6, b""), 0.0)
    assert evs[-1].reason == "expected ServerKey frame, got type 0x06"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x20), st.binary(max_size=80)), max_size=6), st.binary(max_size=40))
def test_fuzz_client_never_raises(frames_, junk):
    client, _ = _login()
    stream = b"".join(f.encode_frame(t, pl) for t, pl in frames_) + junk
    client.receive_data(stream, 5.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=100))
def test_fuzz_parse_frame_only_frame_error(t, pl):
    try:
        f.parse_frame(t, pl)
    except f.DerpFrameError:
        pass
