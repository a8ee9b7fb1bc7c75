"""ts2021 Noise IK: interop with the `noiseprotocol` package, tamper tests, record framing with BE nonces."""

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise.connection import Keypair, NoiseConnection

from engine.control import noise as N
from engine.types.keys import MachinePrivate

VERSION = 130


def _reference_responder(server: MachinePrivate, version=VERSION):
    r = NoiseConnection.from_name(N.PROTOCOL_NAME)
    r.set_as_responder()
    r.set_prologue(f"Tailscale Control Protocol v{version}".encode())
    r.set_keypair_from_private_bytes(Keypair.STATIC, server.raw)
    r.start_handshake()
    return r


def _pair():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    resp, sconn, peer = N.ServerHandshake(server).accept(hs.initiation)
    cconn = hs.receive_response(resp)
    assert peer == client.public()
    return cconn, sconn


def test_sizes():
    assert N.INITIATION_LEN == 101
    assert N.RESPONSE_LEN == 51
    assert N.MAX_PLAINTEXT_SIZE == 4077


def test_initiation_layout():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    assert len(hs.initiation) == 101
    assert struct.unpack(">HBH", hs.initiation[:5]) == (VERSION, 0x01, 96)


def test_handshake_against_noiseprotocol():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    ref = _reference_responder(server)
    assert ref.read_message(hs.initiation[5:]) == b""
    assert ref.noise_protocol.handshake_state.rs.public_bytes == client.public().raw
    resp_payload = ref.write_message()
    assert len(resp_payload) == 48
    conn = hs.receive_response(struct.pack(">BH", 2, 48) + resp_payload)
    assert ref.handshake_finished
    assert conn.handshake_hash == ref.get_handshake_hash()
    # first transport message: nonce 0 is the same in LE and BE
    rec = conn.encrypt(b"hello control")
    assert rec[0] == 0x04 and struct.unpack(">H", rec[1:3])[0] == len(rec) - 3
    assert ref.decrypt(rec[3:]) == b"hello control"
    # the reference encrypts its first message with nonce 0 too
    assert conn.receive_data(b"\x04" + struct.pack(">H", 13 + 16) + ref.encrypt(b"from server!!")) == b"from server!!"


def test_reference_initiator_against_our_responder():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    i = NoiseConnection.from_name(N.PROTOCOL_NAME)
    i.set_as_initiator()
    i.set_prologue(f"Tailscale Control Protocol v{VERSION}".encode())
    i.set_keypair_from_private_bytes(Keypair.STATIC, client.raw)
    i.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server.public().raw)
    i.start_handshake()
    msg = i.write_message()
    resp, sconn, peer = N.ServerHandshake(server).accept(struct.pack(">HBH", VERSION, 1, 96) + msg)
    assert peer == client.public()
    i.read_message(resp[3:])
    assert i.handshake_finished and i.get_handshake_hash() == sconn.handshake_hash


def test_nonce_is_big_endian():
    c, s = _pair()
    recs = [c.encrypt(b"x%d" % i) for i in range(3)]
    # decrypt record #1 by hand with a big-endian nonce: proves the counter layout
    key = c._tx  # ChaCha20Poly1305 of the send key
    ct = recs[1][3:]
    assert key.decrypt(b"\x00" * 4 + (1).to_bytes(8, "big"), ct, None) == b"x1"
    with pytest.raises(Exception):
        key.decrypt(b"\x00" * 4 + (1).to_bytes(8, "little"), ct, None)
    assert s.receive_data(b"".join(recs)) == b"x0x1x2"


def test_prologue_version_binds():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    bad = struct.pack(">H", VERSION + 1) + hs.initiation[2:]
    with pytest.raises(N.RemoteProtocolError, match="decryption failed"):
        N.ServerHandshake(server).accept(bad)


def test_tamper_initiation_every_byte():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    for i in range(len(hs.initiation)):
        b = bytearray(hs.initiation)
        b[i] ^= 0x01
        with pytest.raises(N.NoiseError):
            N.ServerHandshake(server).accept(bytes(b))


def test_tamper_response_every_byte():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    for i in range(N.RESPONSE_LEN):
        hs = N.ClientHandshake(client, server.public(), VERSION)
        resp, _, _ = N.ServerHandshake(server).accept(hs.initiation)
        b = bytearray(resp)
        b[i] ^= 0x01
        with pytest.raises(N.NoiseError):
            hs.receive_response(bytes(b))


def test_error_frame():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    frame = N.error_frame("unsupported version")
    assert N.ClientHandshake.needed(frame[:3]) == len(frame)
    with pytest.raises(N.ServerError, match="server error: unsupported version"):
        hs.receive_response(frame)


def test_response_wrong_type_and_length():
    server, client = MachinePrivate.generate(), MachinePrivate.generate()
    hs = N.ClientHandshake(client, server.public(), VERSION)
    with pytest.raises(N.RemoteProtocolError, match="unexpected message type 0x07"):
        hs.receive_response(b"\x07\x00\x30" + bytes(48))
    with pytest.raises(N.RemoteProtocolError, match="wrong length 47"):
        hs.receive_response(b"\x02\x00\x2f" + bytes(47))


def test_large_write_is_split_and_reassembled_byte_by_byte():
    c, s = _pair()
    data = bytes(range(256)) * 40  # 10240 bytes
    wire = c.encrypt(data)
    assert c.records_out == 3
    pos, sizes = 0, []
    while pos < len(wire):
        n = struct.unpack(">H", wire[pos + 1 : pos + 3])[0]
        sizes.append(3 + n)
        pos += 3 + n
    assert max(sizes) == N.MAX_FRAME_SIZE
    out = b"".join(s.receive_data(wire[i : i + 1]) for i in range(len(wire)))
    assert out == data and s.failed is None


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda w: b"\x05" + w[1:], "unexpected record type 0x05"),
        (lambda w: b"\x04\x0f\xfe" + w[3:], "record too large: 4094 bytes (max 4093)"),
        (lambda w: b"\x04\x00\x03abc", "record too short: 3 bytes"),
        (lambda w: w[:5] + bytes([w[5] ^ 1]) + w[6:], "record decryption failed"),
    ],
)
def test_malformed_records_fail_without_raising(mutate, reason):
    c, s = _pair()
    assert s.receive_data(mutate(c.encrypt(b"some payload"))) == b""
    assert s.failed == reason
    assert s.receive_data(c.encrypt(b"more")) == b""  # once failed, always failed
    with pytest.raises(N.LocalProtocolError):
        s.encrypt(b"x")


def test_replayed_record_fails():
    c, s = _pair()
    rec = c.encrypt(b"one")
    assert s.receive_data(rec) == b"one"
    assert s.receive_data(rec) == b""
    assert s.failed == "record decryption failed"


def test_server_rejects_wrong_initiation():
    server = MachinePrivate.generate()
    with pytest.raises(N.RemoteProtocolError, match="wrong length 100"):
        N.ServerHandshake(server).accept(bytes(100))
    with pytest.raises(N.RemoteProtocolError, match="unsupported version 100"):
        hs = N.ClientHandshake(MachinePrivate.generate(), server.public(), 100)
        N.ServerHandshake(server, min_version=113).accept(hs.initiation)


def test_chacha_nonce_helper():
    assert N.nonce_be(1) == bytes(11) + b"\x01"
    assert N.nonce_be(2**64 - 2) == bytes(4) + b"\xff" * 7 + b"\xfe"
    ChaCha20Poly1305(bytes(32)).encrypt(N.nonce_be(5), b"", None)
