"""Keypair counters/limits and the current/previous/next rotation rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.wg import handshake as hsm
from engine.wg.crypto import PrivateKey
from engine.wg.drops import DropReason
from engine.wg.keypair import Keypair
from engine.wg.messages import Initiation, Response
from engine.wg.session import KeypairSet


def kp(initiator: bool, idx: int, created: float = 0.0) -> Keypair:
    return Keypair(
        bytes(32), bytes(32), local_index=idx, remote_index=idx + 100, created=created, is_initiator=initiator
    )


# The send/receive limits (REKEY/REJECT_AFTER_MESSAGES/TIME) live in DeviceCore.encrypt/decrypt
# and the data plane's fast paths; they are tested through the core in test_core.py
# (test_message_limits, test_receive_rejects_keypair_older_than_180s) and test_timers.py.


def test_keypair_repr_names_indexes_and_role():
    assert "Keypair(local=0x00000001" in repr(kp(False, 1)) and "responder" in repr(kp(False, 1))
    assert "initiator" in repr(kp(True, 2))


def test_rotation_initiator_and_responder():
    s = KeypairSet()
    a = kp(True, 1)
    assert s.install(a) == [] and s.current is a
    b = kp(True, 2)
    assert s.install(b) == [] and (s.current, s.previous) == (b, a)
    c = kp(True, 3)
    assert s.install(c) == [a] and (s.current, s.previous) == (c, b)
    # responder keypair waits in next; previous is dropped
    r = kp(False, 4)
    assert s.install(r) == [b] and (s.current, s.previous, s.next) == (c, None, r)
    assert s.received_with(c) == (False, [])
    assert s.received_with(r) == (True, []) and (s.current, s.previous, s.next) == (r, c, None)
    # a responder keypair then an initiator one before confirmation: next becomes previous
    r2 = kp(False, 5)
    assert s.install(r2) == [c] and s.next is r2 and s.previous is None
    i2 = kp(True, 6)
    assert sorted(k.local_index for k in s.install(i2)) == [4]  # old current r dropped
    assert (s.current, s.previous, s.next) == (i2, r2, None)
    assert sorted(k.local_index for k in s.clear()) == [5, 6]
    assert s.all() == []


IDENT = hsm.StaticIdentity(PrivateKey(bytes([0x22]) * 32))


def _hs():
    hs = hsm.PeerHandshake(PrivateKey(bytes([0x11]) * 32).public())
    hs.set_identity(IDENT)
    return hs


@settings(max_examples=150, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=48, max_size=48),
    st.binary(min_size=28, max_size=28),
    st.integers(0, 2**32 - 1),
)
def test_fuzz_handshake_consumers_return_drops(eph, static, ts, sender):
    opened = hsm.open_initiation(IDENT, Initiation(sender, eph, static, ts))
    assert isinstance(opened, DropReason)  # random bytes never authenticate


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1))
def test_fuzz_response_consumer(eph, empty, receiver):
    hs = _hs()
    msg = hsm.create_initiation(
        hsm.StaticIdentity(PrivateKey(bytes([0x11]) * 32)),
        hsm.PeerHandshake(IDENT.public),
        sender_index=1,
        wall_time=0.0,
        ephemeral=PrivateKey(bytes([3]) * 32),
    )
    assert msg is None  # that handshake had no identity set: refused, not raised
    r = hsm.consume_response(IDENT, Response(7, receiver, eph, empty), hs)
    assert r == DropReason.UNEXPECTED_RESPONSE
    hs.state, hs.local_index, hs.local_ephemeral = (
        hsm.HandshakeState.INITIATION_CREATED,
        receiver,
        PrivateKey(bytes([3]) * 32),
    )
    hs.chain_key, hs.hash = bytes(32), bytes(32)
    assert isinstance(hsm.consume_response(IDENT, Response(7, receiver, eph, empty), hs), DropReason)
    assert hs.state == hsm.HandshakeState.INITIATION_CREATED  # nothing committed


def test_marshal_refuses_wrong_field_sizes():
    with pytest.raises(ValueError, match=r"^initiation.ephemeral: length 31, want 32 bytes$"):
        Initiation(1, bytes(31), bytes(48), bytes(28)).marshal()
