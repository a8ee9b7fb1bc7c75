"""HandshakeState machine: every (state, event) pair does what the transition table says."""

from __future__ import annotations

import itertools

import pytest

from engine.wg import handshake as hsm
from engine.wg.crypto import PrivateKey
from engine.wg.drops import DropReason
from engine.wg.handshake import HandshakeEvent as E, HandshakeState as S
from engine.wg.messages import Response

ID_I = hsm.StaticIdentity(PrivateKey(bytes([1]) * 32))  # initiator (I)
ID_R = hsm.StaticIdentity(PrivateKey(bytes([2]) * 32))  # responder (R)
_eph = itertools.count(10)
_wall = itertools.count(1_700_000_000)


def _new_eph() -> PrivateKey:
    return PrivateKey(bytes([next(_eph) % 250 + 3]) * 32)


def _pair():
    hs_i = hsm.PeerHandshake(ID_R.public)  # I's view of R
    hs_i.set_identity(ID_I)
    hs_r = hsm.PeerHandshake(ID_I.public)  # R's view of I
    hs_r.set_identity(ID_R)
    return hs_i, hs_r


def _i_initiates(hs_i, hs_r):
    msg = hsm.create_initiation(ID_I, hs_i, sender_index=11, wall_time=next(_wall), ephemeral=_new_eph())
    opened = hsm.open_initiation(ID_R, msg)
    return hsm.accept_initiation(opened, hs_r, now=float(next(_wall)), initiation_rate=0.02)


def _r_in_state(state: S):
    """(hs_i, hs_r) with R's handshake (the one under test) in ``state``."""
    hs_i, hs_r = _pair()
    if state == S.INITIATION_CREATED:
        hsm.create_initiation(ID_R, hs_r, sender_index=22, wall_time=next(_wall), ephemeral=_new_eph())
    elif state in (S.INITIATION_CONSUMED, S.RESPONSE_CREATED):
        assert _i_initiates(hs_i, hs_r) is None
        if state == S.RESPONSE_CREATED:
            assert hsm.create_response(hs_r, sender_index=23, ephemeral=_new_eph()) is not None
    elif state == S.RESPONSE_CONSUMED:
        msg = hsm.create_initiation(ID_R, hs_r, sender_index=24, wall_time=next(_wall), ephemeral=_new_eph())
        opened = hsm.open_initiation(ID_I, msg)
        assert hsm.accept_initiation(opened, hs_i, now=1.0, initiation_rate=0.02) is None
        resp = hsm.create_response(hs_i, sender_index=25, ephemeral=_new_eph())
        assert hsm.consume_response(ID_R, resp, hs_r) is None
    assert hs_r.state == state
    return hs_i, hs_r


def _apply(event: E, hs_i, hs_r) -> bool:
    """Apply ``event`` to R's handshake; True if it was accepted."""
    if event == E.CREATE_INITIATION:
        return (
            hsm.create_initiation(ID_R, hs_r, sender_index=30, wall_time=next(_wall), ephemeral=_new_eph()) is not None
        )
    if event == E.ACCEPT_INITIATION:
        return _i_initiates(hs_i, hs_r) is None
    if event == E.CREATE_RESPONSE:
        return hsm.create_response(hs_r, sender_index=31, ephemeral=_new_eph()) is not None
    if event == E.CONSUME_RESPONSE:
        if hs_r.state == S.INITIATION_CREATED:  # a genuine response from I
            # R re-initiates (same state, fresh round) so that I can answer it genuinely
            hs_i2, hs_r2 = _pair()
            msg = hsm.create_initiation(ID_R, hs_r, sender_index=32, wall_time=next(_wall), ephemeral=_new_eph())
            opened = hsm.open_initiation(ID_I, msg)
            assert hsm.accept_initiation(opened, hs_i2, now=1.0, initiation_rate=0.02) is None
            resp = hsm.create_response(hs_i2, sender_index=33, ephemeral=_new_eph())
            return hsm.consume_response(ID_R, resp, hs_r) is None
        r = hsm.consume_response(ID_R, Response(5, hs_r.local_index, bytes(ID_I.public), bytes(16)), hs_r)
        assert isinstance(r, DropReason)
        return False
    if event == E.DERIVE_KEYPAIR:
        return hsm.derive_keypair(hs_r, now=0.0) is not None
    hs_r.zero()
    return True


@pytest.mark.parametrize("event", list(E), ids=lambda e: e.value)
@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_every_state_event_pair(state, event):
    hs_i, hs_r = _r_in_state(state)
    want = hsm.next_state(state, event)
    accepted = _apply(event, hs_i, hs_r)
    assert accepted is (want is not None)
    assert hs_r.state == (want if want is not None else state)
