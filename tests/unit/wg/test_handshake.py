"""Noise_IKpsk2 handshake: interop with the `noiseprotocol` package, a pinned transcript,
tamper-every-byte, PSK, timestamp replay and initiation flood."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from noise.connection import Keypair as NoiseKeypair, NoiseConnection

from engine.wg import crypto, handshake as hsm
from engine.wg.constants import CONSTRUCTION, IDENTIFIER
from engine.wg.crypto import PrivateKey
from engine.wg.drops import DropReason
from engine.wg.messages import Initiation, Response

from .conftest import A_ADDR, B_ADDR, Pair, ip4

WALL = 1_700_000_000.25
S_I = PrivateKey(bytes([0x11]) * 32)  # initiator static
S_R = PrivateKey(bytes([0x22]) * 32)  # responder static
E_I = PrivateKey(bytes([0x33]) * 32)
E_R = PrivateKey(bytes([0x44]) * 32)
PSK = bytes([0x55]) * 32


def _noise(initiator: bool, psk: bytes) -> NoiseConnection:
    n = NoiseConnection.from_name(CONSTRUCTION)
    n.set_psks(psk)
    n.set_prologue(IDENTIFIER)
    if initiator:
        n.set_as_initiator()
        n.set_keypair_from_private_bytes(NoiseKeypair.STATIC, S_I.raw())
        n.set_keypair_from_public_bytes(NoiseKeypair.REMOTE_STATIC, bytes(S_R.public()))
        n.set_keypair_from_private_bytes(NoiseKeypair.EPHEMERAL, E_I.raw())
    else:
        n.set_as_responder()
        n.set_keypair_from_private_bytes(NoiseKeypair.STATIC, S_R.raw())
        n.set_keypair_from_private_bytes(NoiseKeypair.EPHEMERAL, E_R.raw())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "ephemeral keypair already set": fixed test vector
        n.start_handshake()
    return n


def _our_initiator(psk: bytes = PSK):
    ident = hsm.StaticIdentity(S_I)
    hs = hsm.PeerHandshake(S_R.public(), psk)
    hs.set_identity(ident)
    return ident, hs


def _our_responder(psk: bytes = PSK):
    ident = hsm.StaticIdentity(S_R)
    hs = hsm.PeerHandshake(S_I.public(), psk)
    hs.set_identity(ident)
    return ident, hs


@pytest.mark.parametrize("psk", [PSK, bytes(32)], ids=["psk", "no_psk"])
def test_noise_initiator_to_our_responder(psk):
    noise = _noise(True, psk)
    payload = crypto.tai64n(WALL)
    wire = bytes(noise.write_message(payload))
    assert len(wire) == 32 + 48 + 28
    msg = Initiation(0x1234, wire[:32], wire[32:80], wire[80:108])
    ident, hs = _our_responder(psk)
    opened = hsm.open_initiation(ident, msg)
    assert not isinstance(opened, DropReason)
    assert opened.remote_static == S_I.public()
    assert hsm.accept_initiation(opened, hs, now=0.0, initiation_rate=0.02) is None
    assert hs.last_timestamp == payload
    resp = hsm.create_response(hs, sender_index=0x5678, ephemeral=E_R)
    assert resp.receiver == 0x1234
    assert bytes(noise.read_message(resp.ephemeral + resp.encrypted_nothing)) == b""
    assert noise.handshake_finished
    kp = hsm.derive_keypair(hs, now=0.0)
    assert not kp.is_initiator and (kp.local_index, kp.remote_index) == (0x5678, 0x1234)
    # transport: noise's first cipher (initiator -> responder) uses counter 0
    ct = bytes(noise.encrypt(b"ping"))
    assert kp.recv_aead.decrypt(crypto.nonce(0), ct, None) == b"ping"
    assert bytes(noise.decrypt(kp.send_aead.encrypt(crypto.nonce(0), b"pong", None))) == b"pong"


@pytest.mark.parametrize("psk", [PSK, bytes(32)], ids=["psk", "no_psk"])
def test_our_initiator_to_noise_responder(psk):
    ident, hs = _our_initiator(psk)
    msg = hsm.create_initiation(ident, hs, sender_index=0xAAAA, wall_time=WALL, ephemeral=E_I)
    noise = _noise(False, psk)
    payload = bytes(noise.read_message(msg.ephemeral + msg.encrypted_static + msg.encrypted_timestamp))
    assert payload == crypto.tai64n(WALL)
    wire = bytes(noise.write_message(b""))
    resp = Response(0xBBBB, 0xAAAA, wire[:32], wire[32:48])
    assert hsm.consume_response(ident, resp, hs) is None
    kp = hsm.derive_keypair(hs, now=1.0)
    assert kp.is_initiator and (kp.local_index, kp.remote_index, kp.created) == (0xAAAA, 0xBBBB, 1.0)
    assert bytes(noise.decrypt(kp.send_aead.encrypt(crypto.nonce(0), b"data", None))) == b"data"
    assert kp.recv_aead.decrypt(crypto.nonce(0), bytes(noise.encrypt(b"back")), None) == b"back"
    assert hs.state == hsm.HandshakeState.ZEROED and hs.chain_key == b""


def test_pinned_transcript_vector():
    """Our own transcript for fixed keys, checked above against noiseprotocol; pinned against regressions."""
    ident_i, hs_i = _our_initiator()
    ident_r, hs_r = _our_responder()
    init = hsm.create_initiation(ident_i, hs_i, sender_index=1, wall_time=WALL, ephemeral=E_I)
    opened = hsm.open_initiation(ident_r, init)
    assert hsm.accept_initiation(opened, hs_r, now=0.0, initiation_rate=0.02) is None
    resp = hsm.create_response(hs_r, sender_index=2, ephemeral=E_R)
    assert hsm.consume_response(ident_i, resp, hs_i) is None
    ki, kr = hsm.derive_keypair(hs_i, now=0.0), hsm.derive_keypair(hs_r, now=0.0)
    ct = ki.send_aead.encrypt(crypto.nonce(0), b"vector", None)
    assert kr.recv_aead.decrypt(crypto.nonce(0), ct, None) == b"vector"
    transcript = init.marshal() + resp.marshal() + ct
    assert init.ephemeral.hex() == bytes(E_I.public()).hex()
    assert hashlib.sha256(transcript).hexdigest() == PINNED_TRANSCRIPT_SHA256, transcript.hex()


PINNED_TRANSCRIPT_SHA256 = "09ef8681799a715ff1402ff97923ca760e8215b73b6d0087e6850eacef4b34ba"


def test_handshake_constants():
    assert hsm.INITIAL_CHAIN_KEY == hashlib.blake2s(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").digest()
    assert hsm.INITIAL_HASH == hashlib.blake2s(hsm.INITIAL_CHAIN_KEY + b"WireGuard v1 zx2c4 Jason@zx2c4.com").digest()


def _initiation_from(p: Pair) -> bytes:
    assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now) is None
    (out,) = p.a.datagrams_to_send()
    assert len(out.data) == 148
    return out.data


def test_tamper_every_byte_of_initiation():
    p = Pair()
    wire = _initiation_from(p)
    for i in range(148 - 16):  # everything but mac2 (checked only under load)
        bad = bytearray(wire)
        bad[i] ^= 0x01
        r = p.b.decrypt(bytes(bad), A_ADDR, p.now)
        assert isinstance(r, DropReason), i
    assert p.b.datagrams_to_send() == []
    assert p.b.decrypt(wire, A_ADDR, p.now) is None  # the untampered one still works
    (resp,) = p.b.datagrams_to_send()
    assert len(resp.data) == 92
    counters = p.b.counters()
    assert counters["drop_malformed"] == 4  # type + 3 reserved bytes
    assert counters["drop_bad_mac1"] == 148 - 16 - 4


def test_tamper_every_byte_of_response():
    p = Pair()
    init = _initiation_from(p)
    assert p.b.decrypt(init, A_ADDR, p.now) is None
    (resp,) = p.b.datagrams_to_send()
    for i in range(92 - 16):
        bad = bytearray(resp.data)
        bad[i] ^= 0x80
        assert isinstance(p.a.decrypt(bytes(bad), B_ADDR, p.now), DropReason), i
    assert p.a.datagrams_to_send() == []
    assert p.a.decrypt(resp.data, B_ADDR, p.now) is None
    assert p.pa.keypairs.current is not None


def test_replayed_initiation_is_dropped_and_flood_limited():
    p = Pair()
    init = _initiation_from(p)
    assert p.b.decrypt(init, A_ADDR, 0.0) is None
    p.b.datagrams_to_send()
    assert p.b.decrypt(init, A_ADDR, 5.0) == DropReason.REPLAYED_TIMESTAMP
    # a newer initiation within 20 ms of the last accepted one is a flood
    p.clock.now = 6.0
    p.pa.timers.last_sent_handshake = None
    p.a._send_initiation_locked(p.pa, 6.0, is_retry=False)
    (o,) = p.a.datagrams_to_send()
    p.b._counters.clear()
    p.pb.handshake.last_initiation_consumption = 5.99
    assert p.b.decrypt(o.data, A_ADDR, 6.0) == DropReason.INITIATION_FLOOD
    assert p.b.decrypt(o.data, A_ADDR, 6.05) is None


def test_unknown_peer_and_psk_mismatch():
    p = Pair(psk=bytes([9]) * 32)
    p.b.update_peer(p.pb, preshared_key=bytes([8]) * 32)
    init = _initiation_from(p)
    assert p.b.decrypt(init, A_ADDR, p.now) is None  # psk is only used in the response
    (resp,) = p.b.datagrams_to_send()
    assert p.a.decrypt(resp.data, B_ADDR, p.now) == DropReason.DECRYPT_RESPONSE
    p.b.remove_peer(p.a.public_key)
    p.pa.timers.last_sent_handshake = None
    p.a._send_initiation_locked(p.pa, 10.0, is_retry=False)
    (o,) = p.a.datagrams_to_send()
    assert p.b.decrypt(o.data, A_ADDR, 10.0) == DropReason.UNKNOWN_PEER


def test_psk_pair_works():
    p = Pair(psk=bytes([7]) * 32)
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    assert len(p.delivered_to_b) == 1
