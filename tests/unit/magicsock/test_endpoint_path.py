"""PeerPath state machine with a fake clock: DERP first, direct after pong, heartbeat loss, recovery."""

from __future__ import annotations

import itertools

import pytest

from engine.magicsock import constants as C
from engine.magicsock.endpoint import PeerPath, SendCallMeMaybe, SendPing, better_addr

A = ("198.51.100.7", 41641)
B = ("10.0.0.5", 41641)


def _rand():
    c = itertools.count()
    return lambda n: next(c).to_bytes(n, "big")


def _peer(endpoints=(A,)):
    p = PeerPath(node_key=b"n" * 32, disco_key=b"d" * 32, random=_rand(), home_derp=1)
    p.set_netmap_endpoints(endpoints, now=0.0)
    return p


def pings(actions):
    return [a for a in actions if isinstance(a, SendPing)]


def answer(p, actions, now, rtt=0.002, only=None):
    for a in pings(actions):
        if only is None or a.addr in only:
            p.handle_pong(a.txid, a.addr, now + rtt)


def test_starts_on_derp_and_pings_candidates():
    p = _peer()
    assert p.addr_for_send(0.0) == (None, True)
    acts = p.note_send(0.0)
    assert [a.addr for a in pings(acts)] == [A]
    assert SendCallMeMaybe() in acts
    # rate limited: a second send within DISCO_PING_INTERVAL pings nothing new
    assert p.note_send(1.0) == []
    assert p.status(1.0).path == "derp"


def test_pong_upgrades_to_direct_with_latency():
    p = _peer()
    acts = p.note_send(0.0)
    answer(p, acts, 0.0, rtt=0.004)
    assert p.addr_for_send(0.01) == (A, False)
    st = p.status(0.01)
    assert st.path == "direct" and st.addr == "198.51.100.7:41641" and st.latency_ms == pytest.approx(4.0)


def test_unknown_pong_ignored():
    p = _peer()
    p.note_send(0.0)
    assert p.handle_pong(b"\xff" * 12, A, 0.1) is False
    assert p.addr_for_send(0.1) == (None, True)


def test_heartbeat_keeps_trust_then_loss_falls_back_to_derp_then_recovers():
    p = _peer()
    now = 0.0
    answer(p, p.note_send(now), now)
    assert p.trusted(0.01)
    # steady traffic with answered heartbeats for 20 s: stays direct
    hb = 0
    while now < 20.0:
        now += 0.5
        p.note_send(now)
        t = p.get_timer()
        if t is not None and t <= now:
            acts = p.handle_timer(now)
            hb += len(pings(acts))
            answer(p, acts, now)
        assert p.addr_for_send(now) == (A, False), now
    assert hb >= 5  # ~every HEARTBEAT_INTERVAL
    # the path dies: no more pongs
    died = now
    while p.trusted(now):
        now += 0.5
        p.note_send(now)
        if (t := p.get_timer()) is not None and t <= now:
            p.handle_timer(now)
    assert now - died <= C.TRUST_UDP_ADDR_DURATION + 0.5
    udp, derp = p.addr_for_send(now)
    assert derp  # DERP (and maybe the untrusted old address) from here on
    assert p.status(now).path == "derp"
    # it comes back: discovery keeps pinging while sending; the next pong restores direct
    recovered = None
    for _ in range(40):
        now += 0.5
        acts = p.note_send(now)
        if (t := p.get_timer()) is not None and t <= now:
            acts += p.handle_timer(now)
        if pings(acts):
            answer(p, acts, now)
        if p.trusted(now + 0.01):
            recovered = now
            break
    assert recovered is not None and recovered - died < 20
    assert p.addr_for_send(recovered + 0.01) == (A, False)


def test_call_me_maybe_pings_all_immediately():
    p = _peer()
    p.note_send(0.0)
    acts = p.handle_call_me_maybe([B, A], 0.5)
    assert {a.addr for a in pings(acts)} == {A, B}


def test_prefers_lower_latency_and_private():
    p = _peer(endpoints=(A, B))
    acts = p.note_send(0.0)
    by_addr = {a.addr: a for a in pings(acts)}
    p.handle_pong(by_addr[A].txid, A, 0.030)
    assert p.best_addr == A
    p.handle_pong(by_addr[B].txid, B, 0.002)
    assert p.best_addr == B


def test_better_addr_hysteresis():
    assert better_addr(A, 0.010, None, None)
    assert not better_addr(A, 0.0099, ("203.0.113.1", 1), 0.010)  # ~1 point: no switch
    assert better_addr(A, 0.005, ("203.0.113.1", 1), 0.010)


def test_session_idle_stops_heartbeats():
    p = _peer()
    answer(p, p.note_send(0.0), 0.0)
    now = 0.0
    while now < C.SESSION_ACTIVE_TIMEOUT + 10:
        now += 1.0
        if (t := p.get_timer()) is not None and t <= now:
            answer(p, p.handle_timer(now), now)
    assert p.get_timer() is None or p.get_timer() > now
    assert p.handle_timer(now + 100) == []


def test_ping_from_peer_adds_candidate_and_pings_back():
    p = _peer(endpoints=())
    acts = p.handle_ping_from(("203.0.113.9", 5555), 1.0)
    assert [a.addr for a in pings(acts)] == [("203.0.113.9", 5555)]
    assert p.handle_ping_from(("203.0.113.9", 5555), 1.5) == []  # rate limited
    assert pings(p.note_send(1.6)) == []  # pinged 0.6 s ago
    answer(p, acts, 1.0)
    assert p.trusted(1.01)
    assert p.handle_ping_from(("203.0.113.9", 5555), 3.0) == []  # trusted: no ping-back


def test_netmap_endpoint_removal():
    p = _peer(endpoints=(A, B))
    p.set_netmap_endpoints([B], 1.0)
    assert set(p.candidates) == {B}


from hypothesis import (  # noqa: E402
    given,
    settings,
    strategies as st,  # noqa: E402
)

ADDRS = [A, B, ("203.0.113.9", 5555)]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "pong_pending", "pong_random", "timer", "cmm", "ping_from", "netmap"]),
        st.floats(0.0, 8.0),
        st.integers(0, 2),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_random_inputs_keep_invariants(ops):
    """Any sequence of inputs: no exception, timers are sane, 'direct' only with a best address."""
    p = _peer()
    now = 0.0
    for op, dt, i in ops:
        now += dt
        if op == "send":
            p.note_send(now)
        elif op == "pong_pending" and p.pending:
            txid = sorted(p.pending)[i % len(p.pending)]
            p.handle_pong(txid, p.pending[txid][0], now)
        elif op == "pong_random":
            assert p.handle_pong(bytes([i]) * 12, ADDRS[i], now) is False or True
        elif op == "timer":
            p.handle_timer(now)
            t = p.get_timer()
            assert t is None or t > now  # progress: the timer loop can never spin
        elif op == "cmm":
            p.handle_call_me_maybe([ADDRS[i]], now)
        elif op == "ping_from":
            p.handle_ping_from(ADDRS[i], now)
        elif op == "netmap":
            p.set_netmap_endpoints(ADDRS[: i + 1], now)
        udp, derp = p.addr_for_send(now)
        if not derp:
            assert udp is not None and p.trusted(now)
        st_ = p.status(now)
        assert st_.path in ("direct", "derp")
        assert (st_.path == "direct") == p.trusted(now)
        t = p.get_timer()
        assert t is None or t == t  # not NaN
        for _addr, sent in p.pending.values():
            assert sent <= now


def test_gro_run_demux_check():
    from engine.magicsock.conn import _all_wireguard, _split

    wg = b"\x04\x00\x00\x00" + b"x" * 28
    assert _all_wireguard(bytearray(wg * 3), 96, 32)
    stun_like = b"\x01\x01\x00\x00" + b"x" * 28  # binding response, not WireGuard type 1
    assert not _all_wireguard(bytearray(wg + stun_like + wg), 96, 32)
    assert not _all_wireguard(bytearray(wg + b"TS" + b"x" * 30), 64, 32)
    assert _split([b"ab", memoryview(b"cdef")], 4) == [b"abcd", b"ef"]
    assert _split([b"ab", b"cd"], 0) == [b"ab", b"cd"]


@pytest.mark.parametrize(
    "addr,ok",
    [
        (("203.0.113.5", 41641), True),
        (("10.1.0.2", 41641), True),
        (("100.64.0.2", 41641), False),  # our own tailnet range: a path through the tunnel would loop
        (("100.127.255.1", 1), False),
        (("fd7a:115c:a1e0::1", 41641), False),
        (("::ffff:100.64.0.9", 41641), False),
        (("0.0.0.0", 41641), False),
        (("203.0.113.5", 0), False),
    ],
)
def test_usable_candidate(addr, ok):
    from engine.magicsock.endpoint import usable_candidate

    assert usable_candidate(addr) is ok


def test_tailnet_addresses_never_become_candidates():
    p = _peer(endpoints=(A, ("100.64.0.2", 41641)))
    assert set(p.candidates) == {A}
    assert p.handle_ping_from(("100.64.0.2", 41641), 1.0) == []
    assert pings(p.handle_call_me_maybe([("100.64.0.2", 41641)], 1.0)) and ("100.64.0.2", 41641) not in p.candidates
