"""Timer state machine with a fake clock: every timer, alone (PeerTimers) and through a DeviceCore pair."""

from __future__ import annotations

import random

import pytest

from engine.wg.constants import Timings
from engine.wg.timers import Action, PeerTimers

from .conftest import B_ADDR, Pair, ip4

SEND, KEEP, ZERO, GIVE_UP = (Action.SEND_HANDSHAKE_INITIATION, Action.SEND_KEEPALIVE, Action.ZERO_KEYS, Action.GIVE_UP)


class ZeroRandom(random.Random):
    def random(self):
        return 0.0


class MaxRandom(random.Random):
    def random(self):
        return 0.999999


def test_constants_and_timings():
    t = Timings()
    assert (t.rekey_after_time, t.reject_after_time, t.rekey_attempt_time) == (120, 180, 90)
    assert (t.rekey_timeout, t.keepalive_timeout, t.max_timer_handshakes) == (5, 10, 18)
    assert t.zero_keys_after == 540 and t.last_minute_rekey_age == 165
    assert t.rekey_after_messages == 1 << 60 and t.reject_after_messages == (1 << 64) - (1 << 13) - 1


def test_retransmit_with_jitter_then_give_up():
    """Attempts: the first send + 19 retries (wireguard-go's MaxTimerHandshakes+2 = 20 sends), then give up."""
    rnd = random.Random(3)
    t = PeerTimers(Timings(), rnd)
    now = 0.0
    t.handshake_initiated(now)
    sends, jitters = 1, []
    while True:
        d = t.next_deadline()
        assert d is not None
        jitters.append(d - now - 5.0)
        now = d
        acts = t.handle_timer(now)
        if acts == [GIVE_UP]:
            break
        assert acts == [SEND]
        assert t.may_send_initiation(now, is_retry=True)
        sends += 1
        t.handshake_initiated(now)
    assert sends == 20
    assert all(0.0 <= j <= 0.333 + 1e-9 for j in jitters) and len(set(jitters)) > 5
    assert 95.0 <= now <= 100.0 * 1.07
    # give-up arms key zeroing (3 x REJECT_AFTER_TIME) and cancels the keepalive
    assert t.zero_key_material == pytest.approx(now + 540)
    assert t.handle_timer(now + 539.9) == []
    assert t.handle_timer(now + 540) == [ZERO]


def test_handshake_rate_limit_one_per_rekey_timeout():
    t = PeerTimers(Timings(), ZeroRandom())
    assert t.may_send_initiation(0.0, is_retry=False)
    assert not t.may_send_initiation(4.99, is_retry=False)
    assert t.may_send_initiation(5.0, is_retry=False)


def test_passive_keepalive_after_10s():
    t = PeerTimers(Timings(), ZeroRandom())
    t.data_received(1.0)
    assert t.next_deadline() == 11.0
    assert t.handle_timer(10.99) == []
    assert t.handle_timer(11.0) == [KEEP]
    # sending anything cancels the pending keepalive
    t.data_received(20.0)
    t.any_authenticated_packet_sent(21.0)
    assert t.handle_timer(40.0) == []


def test_need_another_keepalive():
    t = PeerTimers(Timings(), ZeroRandom())
    t.data_received(0.0)
    t.data_received(1.0)  # already pending: remember we need another
    assert t.handle_timer(10.0) == [KEEP]
    assert t.send_keepalive == 20.0
    assert t.handle_timer(20.0) == [KEEP]
    assert t.send_keepalive is None


def test_new_handshake_when_sent_data_gets_no_reply():
    t = PeerTimers(Timings(), MaxRandom())
    t.data_sent(0.0)
    assert 15.0 <= t.new_handshake <= 15.334
    t.data_sent(3.0)  # does not push the deadline
    assert t.new_handshake <= 15.334
    assert t.handle_timer(15.0) == []
    assert t.handle_timer(15.4) == [SEND]
    # a reply cancels it
    t.data_sent(20.0)
    t.any_authenticated_packet_received(21.0)
    assert t.handle_timer(60.0) == []


def test_session_derived_zeroes_after_540s_and_handshake_complete_resets():
    t = PeerTimers(Timings(), ZeroRandom())
    t.handshake_attempts = 7
    t.sent_last_minute_handshake = True
    t.handshake_initiated(0.0)
    t.session_derived(1.0)
    t.handshake_complete(1.0)
    assert (t.handshake_attempts, t.sent_last_minute_handshake, t.retransmit_handshake) == (0, False, None)
    assert t.handle_timer(540.9) == []
    assert t.handle_timer(541.0) == [ZERO]


def test_persistent_keepalive():
    t = PeerTimers(Timings(), ZeroRandom(), persistent_keepalive_interval=25)
    t.any_authenticated_packet_traversal(0.0)
    assert t.handle_timer(24.9) == []
    assert t.handle_timer(25.0) == [KEEP]
    t.any_authenticated_packet_traversal(30.0)
    t.persistent_keepalive_interval = 0
    assert t.handle_timer(60.0) == []


# ---------------------------------------------------------------- through DeviceCore pairs


def test_pair_initiator_rekeys_after_120s_on_send():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    first = p.pa.keypairs.current
    sent = p.a.counters()["handshake_initiations_sent"]
    p.clock.now = 119.0
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    assert p.a.counters()["handshake_initiations_sent"] == sent
    p.clock.now = 120.5
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))  # still sent on the old keypair, and a rekey starts
    assert p.a.counters()["handshake_initiations_sent"] == sent + 1
    assert p.pa.keypairs.current is not first and p.pa.keypairs.previous is first
    assert len(p.delivered_to_b) == 3


def test_pair_responder_does_not_rekey_on_time_but_stops_at_180s():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    p.send_b(ip4("10.0.0.2", "10.0.0.1"))
    kp_b = p.pb.keypairs.current
    assert kp_b is not None and not kp_b.is_initiator
    p.clock.now = 150.0
    assert p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), p.now) is not None
    assert p.b.datagrams_to_send() == []  # responder: no time-based rekey
    p.clock.now = 180.0
    assert p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), p.now) is None  # expired: staged + handshake
    (o,) = p.b.datagrams_to_send()
    assert len(o.data) == 148


def test_pair_lowered_rekey_after_time_is_observed():
    p = Pair(Timings(rekey_after_time=2.0))
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    first = p.pa.keypairs.current
    p.advance(6.0)  # 5 s handshake rate limit applies after the first initiation
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    assert p.pa.keypairs.current is not first


def test_pair_passive_keepalive_10s_after_receiving_data():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    n = len(p.wire_log)
    p.advance(9.9)
    assert len(p.wire_log) == n
    p.advance(0.2)
    assert [(d, len(x)) for d, x in p.wire_log[n:]] == [("b->a", 32)]  # b's keepalive


def test_pair_new_handshake_after_15s_without_reply():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    p.send_b(ip4("10.0.0.2", "10.0.0.1"))  # a heard back: its new-handshake timer is cancelled
    assert p.pa.timers.new_handshake is None
    p.advance(1.0)
    drop_b = lambda d, x: d == "b->a"  # noqa: E731  b's replies (and keepalives) are lost
    p.send_a(ip4("10.0.0.1", "10.0.0.2"), drop=drop_b)
    sent = p.a.counters()["handshake_initiations_sent"]
    p.advance(14.9, drop=drop_b)
    assert p.a.counters()["handshake_initiations_sent"] == sent
    p.advance(0.5, drop=drop_b)
    assert p.a.counters()["handshake_initiations_sent"] == sent + 1


def test_pair_give_up_drops_staged_and_zeroes_later():
    p = Pair()
    drop_all = lambda d, x: True  # noqa: E731
    p.send_a(ip4("10.0.0.1", "10.0.0.2"), drop=drop_all)
    assert len(p.pa.staged) == 1
    p.advance(95.0, step=0.05, drop=drop_all)
    assert len(p.pa.staged) == 1  # still trying: 20 sends, 5 s + up to 333 ms apart
    p.advance(15.0, step=0.05, drop=drop_all)
    assert len(p.pa.staged) == 0
    c = p.a.counters()
    assert c["handshakes_given_up"] == 1 and c["handshake_initiations_sent"] == 20


def test_pair_zero_keys_after_540s_without_new_session():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    assert p.pa.keypairs.current is not None
    p.advance(539.0, step=1.0)
    assert p.pa.keypairs.current is not None
    p.advance(2.0, step=1.0)
    assert p.pa.keypairs.all() == [] and p.pb.keypairs.all() == []
    assert p.a.counters()["keys_zeroed"] == 1


def test_pair_persistent_keepalive_brings_up_session_and_repeats():
    p = Pair(keepalive_a=25)
    p.flush()  # turning it on sends a keepalive, which needs (and triggers) a handshake
    assert p.pa.keypairs.current is not None and p.pb.keypairs.current is not None
    n = len(p.wire_log)
    p.advance(25.1)
    assert ("a->b", 32) in [(d, len(x)) for d, x in p.wire_log[n:]]


def test_pair_initiator_rekeys_on_receive_in_the_last_minute():
    """keepKeyFreshReceiving: an initiator keypair older than 180-10-5 = 165 s triggers one handshake."""
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    p.clock.now = 164.0
    d = p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), p.now)
    assert isinstance(p.a.decrypt(d, B_ADDR, p.now), tuple)
    assert p.a.datagrams_to_send() == []
    p.clock.now = 165.5
    d = p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), p.now)
    assert isinstance(p.a.decrypt(d, B_ADDR, p.now), tuple)
    (o,) = p.a.datagrams_to_send()
    assert len(o.data) == 148 and p.pa.timers.sent_last_minute_handshake
    p.clock.now = 171.0  # only once, even past the 5 s rate limit
    d = p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), p.now)
    p.a.decrypt(d, B_ADDR, p.now)
    assert p.a.datagrams_to_send() == []
