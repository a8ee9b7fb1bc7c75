"""DeviceCore pair tests: data both ways, padding, rotation, limits, drops, fuzz, threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings, strategies as st

from engine.wg.constants import Timings
from engine.wg.core import DeviceCore, Outgoing
from engine.wg.drops import DropReason
from engine.wg.messages import SIZE_TRANSPORT_HEADER

from .conftest import A_ADDR, B_ADDR, DetRandom, FakeClock, Pair, established_pair, ip4, ip6, valid_datagrams


def test_ipv4_and_ipv6_both_ways_with_padding_trimmed():
    p = Pair()
    pkt4 = ip4("10.0.0.1", "10.0.0.2", b"x" * 13)
    p.send_a(pkt4)
    assert p.delivered_to_b == [pkt4]
    pkt6 = ip6("fd00::2", "fd00::1", b"y" * 3)
    d = p.b.encrypt(p.pb, pkt6, p.now)
    assert (len(d) - SIZE_TRANSPORT_HEADER - 16) % 16 == 0
    r = p.a.decrypt(d, B_ADDR, p.now)
    assert r == (p.pa, pkt6)
    assert p.pa.rx_bytes == 92 + len(d) and p.pb.rx_bytes == 148 + len(p.wire_log[2][1])
    assert p.pa.tx_bytes == 148 + len(p.wire_log[2][1]) and p.pb.tx_bytes == 92 + len(d)


def test_padding_never_exceeds_mtu():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    for size in (1419, 1420, 1421, 1500):
        pkt = ip4("10.0.0.1", "10.0.0.2", b"z" * (size - 20))
        d = p.a.encrypt(p.pa, pkt, p.now)
        assert len(d) - SIZE_TRANSPORT_HEADER - 16 == (1420 if size <= 1420 else size)
        assert p.b.decrypt(d, A_ADDR, p.now) == (p.pb, pkt)


def test_route_and_unknown_destination():
    p = Pair()
    assert p.a.route(ip4("10.0.0.1", "10.0.0.2")) is p.pa
    assert p.a.route(ip6("fd00::1", "fd00::2")) is p.pa
    assert p.a.route(ip4("10.0.0.1", "10.0.0.99")) is None


def test_responder_promotes_next_only_on_first_transport_packet():
    p = Pair()
    assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), 0.0) is None
    (init,) = p.a.datagrams_to_send()
    assert p.b.decrypt(init.data, A_ADDR, 0.0) is None
    (resp,) = p.b.datagrams_to_send()
    assert p.pb.keypairs.next is not None and p.pb.keypairs.current is None
    # b cannot send yet: its packet is staged (and its own handshake is rate-limited)
    assert p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1"), 0.0) is None
    assert p.b.datagrams_to_send() == []
    assert p.a.decrypt(resp.data, B_ADDR, 0.0) is None
    (data,) = p.a.datagrams_to_send()  # a's staged packet (confirms the session)
    r = p.b.decrypt(data.data, A_ADDR, 0.0)
    assert isinstance(r, tuple)
    assert p.pb.keypairs.current is not None and p.pb.keypairs.next is None
    (flushed,) = p.b.datagrams_to_send()  # b's staged packet goes out now
    assert isinstance(p.a.decrypt(flushed.data, B_ADDR, 0.0), tuple)
    assert p.pb.last_handshake == p.clock.wall()


def test_previous_keypair_still_decrypts_in_flight_packets_after_rekey():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    old = p.b.encrypt(p.pb, ip4("10.0.0.2", "10.0.0.1", b"late"), p.now)  # in flight
    p.clock.now = 121.0
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))  # rekey completes
    assert p.pa.keypairs.previous is not None
    r = p.a.decrypt(old, B_ADDR, p.now)
    assert isinstance(r, tuple) and r[1].endswith(b"late")


def test_message_limits():
    p = Pair(Timings(rekey_after_messages=5, reject_after_messages=8))
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))  # counter 0
    kp = p.pa.keypairs.current
    sent = p.a.counters()["handshake_initiations_sent"]
    for _ in range(4):  # counters 1..4
        assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now) is not None
    assert p.a.counters()["handshake_initiations_sent"] == sent
    p.clock.now = 6.0  # past the handshake rate limit
    assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now) is not None  # counter 5: rekey
    assert p.a.counters()["handshake_initiations_sent"] == sent + 1
    p.a.datagrams_to_send()  # lose the initiation
    for _ in range(2):  # 6, 7
        assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now) is not None
    assert p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now) is None  # 8: refused, staged
    assert p.pa.keypairs.current is kp and len(p.pa.staged) == 1
    # the receiver refuses counters at the limit too
    from engine.wg.messages import Transport

    forged = Transport(p.pb.keypairs.current.local_index, 8, bytes(32)).marshal()
    assert p.b.decrypt(forged, A_ADDR, p.now) == DropReason.COUNTER_LIMIT


def test_receive_rejects_keypair_older_than_180s():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    late = p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now)
    assert p.b.decrypt(late, A_ADDR, 180.0) == DropReason.KEYPAIR_EXPIRED


def test_transport_drops():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    d = p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now)
    assert isinstance(p.b.decrypt(d, A_ADDR, p.now), tuple)
    assert p.b.decrypt(d, A_ADDR, p.now) == DropReason.REPLAY
    bad = bytearray(p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now))
    bad[-1] ^= 1
    assert p.b.decrypt(bytes(bad), A_ADDR, p.now) == DropReason.DECRYPT_TRANSPORT
    bad[4] ^= 0xFF
    assert p.b.decrypt(bytes(bad), A_ADDR, p.now) == DropReason.UNKNOWN_INDEX
    spoof = p.a.encrypt(p.pa, ip4("10.0.0.66", "10.0.0.2"), p.now)
    assert p.b.decrypt(spoof, A_ADDR, p.now) == DropReason.DISALLOWED_SOURCE
    lying = bytearray(ip4("10.0.0.1", "10.0.0.2"))
    lying[2:4] = (200).to_bytes(2, "big")
    assert p.b.decrypt(p.a.encrypt(p.pa, bytes(lying), p.now), A_ADDR, p.now) == DropReason.BAD_INNER_PACKET
    assert p.b.decrypt(p.a.encrypt(p.pa, b"\x10" * 20, p.now), A_ADDR, p.now) == DropReason.BAD_INNER_PACKET
    c = p.b.counters()
    for reason in ("replay", "decrypt_transport", "unknown_index", "disallowed_source"):
        assert c[f"drop_{reason}"] == 1
    assert c["drop_bad_inner_packet"] == 2


def test_keepalive_is_consumed_and_updates_endpoint():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    ka = p.a.encrypt(p.pa, b"", p.now)
    assert len(ka) == 32
    assert p.b.decrypt(ka, ("198.51.100.7", 9999), p.now) is None
    assert p.pb.endpoint == ("198.51.100.7", 9999)  # roaming


def test_set_private_key_and_remove_peer_drop_sessions():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    old = p.pa.keypairs.current
    d = p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now)
    p.b.set_private_key(DetRandom(99)(32), p.now)
    assert p.pb.keypairs.all() == []
    assert p.b.decrypt(d, A_ADDR, p.now) == DropReason.UNKNOWN_INDEX
    assert old is p.pa.keypairs.current
    assert p.a.remove_peer(p.b.public_key) is False  # b's key changed: not a's peer any more
    assert p.a.remove_peer(bytes(p.pa.public_key)) is True
    assert p.a.route(ip4("10.0.0.1", "10.0.0.2")) is None
    assert p.a.peers() == []
    with pytest.raises(ValueError):
        p.b.add_peer(p.b.public_key)


def test_no_private_key_drops_everything():
    core = DeviceCore(None, wall_clock=lambda: 0.0)
    assert core.decrypt(b"\x01" + bytes(147), A_ADDR, 0.0) == DropReason.NO_PRIVATE_KEY
    peer = core.add_peer(bytes(range(32)), allowed_ips=["10.0.0.2/32"])
    assert core.encrypt(peer, ip4("10.0.0.1", "10.0.0.2"), 0.0) is None
    assert core.datagrams_to_send() == []


def test_outgoing_shape_and_wakeup_callback():
    calls = []
    clock = FakeClock()
    rnd = DetRandom(3)
    a = DeviceCore(rnd(32), wall_clock=clock.wall, random_bytes=rnd, on_outgoing=lambda: calls.append(1))
    b_pub = DeviceCore(rnd(32), wall_clock=clock.wall, random_bytes=rnd).public_key
    peer = a.add_peer(b_pub, endpoint=B_ADDR, allowed_ips=["10.0.0.2/32"])
    a.encrypt(peer, ip4("10.0.0.1", "10.0.0.2"), 0.0)
    assert a.has_outgoing and calls == [1]
    (o,) = a.handle_timers(0.0)
    assert isinstance(o, Outgoing) and o.peer is peer and o.addr == B_ADDR
    assert not a.has_outgoing
    assert a.next_deadline() == pytest.approx(5.0, abs=0.34)


VALID = valid_datagrams(established_pair())
FUZZ_PAIR = established_pair()


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(VALID + [b""]),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    extra=st.binary(max_size=8),
    to_a=st.booleans(),
    load=st.booleans(),
)
def test_fuzz_decrypt_never_raises(base, flips, cut, extra, to_a, load):
    data = bytearray(base)
    for i, x in flips:
        if i < len(data):
            data[i] ^= x
    if cut is not None:
        data = data[:cut]
    data += extra
    dev = FUZZ_PAIR.a if to_a else FUZZ_PAIR.b
    if load:
        dev.set_under_load(FUZZ_PAIR.now)
    r = dev.decrypt(bytes(data), ("203.0.113.9", 1), FUZZ_PAIR.now)
    assert r is None or isinstance(r, (DropReason, tuple))
    dev.datagrams_to_send()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_are_dropped(data):
    r = FUZZ_PAIR.b.decrypt(data, ("203.0.113.9", 1), FUZZ_PAIR.now)
    assert isinstance(r, DropReason) or r is None


def test_concurrent_encrypt_never_reuses_a_counter():
    p = Pair()
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    out: list[list[bytes]] = [[], [], []]

    def worker(i):
        for _ in range(300):
            out[i].append(p.a.encrypt(p.pa, ip4("10.0.0.1", "10.0.0.2"), p.now))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    datagrams = [d for lst in out for d in lst]
    counters = {int.from_bytes(d[8:16], "little") for d in datagrams}
    assert len(counters) == 900
    results = [p.b.decrypt(d, A_ADDR, p.now) for d in datagrams]
    assert all(isinstance(r, tuple) for r in results)


def test_lossy_bidirectional_soak_keeps_the_tunnel_up():
    """20 fake minutes of traffic both ways with 10% loss: sessions keep rotating, traffic flows."""
    import random as _random

    p = Pair(seed=3)
    loss = _random.Random(9)
    drop = lambda d, x: loss.random() < 0.10  # noqa: E731
    sent_a = sent_b = 0
    for step in range(2400):
        p.advance(0.5, step=0.5, drop=drop)
        if step % 2 == 0:
            p.send_a(ip4("10.0.0.1", "10.0.0.2", b"a%d" % step), drop=drop)
            sent_a += 1
        if step % 3 == 0:
            p.send_b(ip4("10.0.0.2", "10.0.0.1", b"b%d" % step), drop=drop)
            sent_b += 1
    assert len(p.delivered_to_b) > 0.8 * sent_a and len(p.delivered_to_a) > 0.8 * sent_b
    ca, cb = p.a.counters(), p.b.counters()
    completed = ca.get("handshakes_completed", 0) + cb.get("handshakes_completed", 0)
    assert 10 <= completed <= 60, (ca, cb)  # a new session about every 2 minutes, not a storm
    assert "keys_zeroed" not in ca and "keys_zeroed" not in cb
    assert ca.get("drop_replay", 0) == 0 and cb.get("drop_replay", 0) == 0


def test_logs_name_peers_by_short_key_only(caplog):
    import logging

    p = Pair()
    p.a._log = logging.getLogger("test.wg.a")
    p.b._log = logging.getLogger("test.wg.b")
    with caplog.at_level(logging.DEBUG):
        p.send_a(ip4("10.0.0.1", "10.0.0.2"))
        p.b.decrypt(b"\x01" + bytes(147), A_ADDR, p.now)
    text = caplog.text
    assert "handshake complete" in text and "bad_mac1" in text
    for core in (p.a, p.b):
        ident = core._identity
        assert ident.private.raw().hex() not in text
        assert bytes(ident.public).hex() not in text


def test_crossing_initiations_stall_until_the_retransmit_timer_like_wireguard_go():
    """Both sides initiate at the same moment. Each answers the other's initiation, which
    replaces its own (the index is freed), so both responses are dropped and each side holds
    only an unconfirmed ``next`` keypair that cannot send. The retransmit timer (REKEY_TIMEOUT +
    jitter) resolves it; wireguard-go behaves the same (see DeviceCore._receive_initiation)."""
    p = Pair()
    from_a, from_b = ip4("10.0.0.1", "10.0.0.2", b"from-a"), ip4("10.0.0.2", "10.0.0.1", b"from-b")
    assert p.a.encrypt(p.pa, from_a, 0.0) is None and p.b.encrypt(p.pb, from_b, 0.0) is None
    (init_a,), (init_b,) = p.a.datagrams_to_send(), p.b.datagrams_to_send()
    assert p.b.decrypt(init_a.data, A_ADDR, 0.0) is None
    assert p.a.decrypt(init_b.data, B_ADDR, 0.0) is None
    (resp_a,), (resp_b,) = p.a.datagrams_to_send(), p.b.datagrams_to_send()
    assert p.a.decrypt(resp_b.data, B_ADDR, 0.0) == DropReason.UNKNOWN_INDEX
    assert p.b.decrypt(resp_a.data, A_ADDR, 0.0) == DropReason.UNKNOWN_INDEX
    for peer in (p.pa, p.pb):
        assert peer.keypairs.current is None and peer.keypairs.next is not None
        assert list(peer.staged) == [from_a if peer is p.pa else from_b]
    # Until the retransmit timer nothing goes out: new packets are staged and their initiation
    # is held back by the rate limit (the response we sent counts as a handshake message).
    p.advance(4.99, step=0.01)
    assert p.a.encrypt(p.pa, from_a, p.now) is None and p.a.datagrams_to_send() == []
    assert p.delivered_to_a == [] and p.delivered_to_b == []
    assert p.a.counters()["handshake_initiations_sent"] == p.b.counters()["handshake_initiations_sent"] == 1
    # REKEY_TIMEOUT (5 s) + jitter (< 334 ms) after the first initiation, a retry completes it
    p.advance(0.35, step=0.001)
    assert p.delivered_to_b == [from_a, from_a] and p.delivered_to_a == [from_b]
    assert p.pa.keypairs.current is not None and p.pb.keypairs.current is not None
    done = [t.last_handshake_completed for t in (p.pa.timers, p.pb.timers)]
    assert all(d is not None and 5.0 <= d <= 5.334 for d in done)


def _bookkeeping(peer) -> tuple:
    t = peer.timers
    return (
        t.persistent_keepalive,
        t.send_keepalive,
        t.new_handshake,
        t.need_another_keepalive,
        t.sent_last_minute_handshake,
        peer.rx_bytes,
        peer.tx_bytes,
        peer.endpoint,
    )


@pytest.mark.parametrize("payload", [b"data", None])  # None: a keepalive
def test_batch_hooks_are_the_per_packet_bookkeeping(payload):
    """note_sent/note_received (what a batching data plane calls) do exactly what encrypt and
    decrypt do per packet: same timers, byte counts, roaming and last-minute rekey."""
    roamed = ("198.51.100.9", 4242)
    by_packet, by_hook = Pair(keepalive_a=25), Pair(keepalive_a=25)
    for p in (by_packet, by_hook):
        p.send_a(ip4("10.0.0.1", "10.0.0.2"))  # a initiates
        p.b.update_peer(p.pb, persistent_keepalive=25, now=0.0)
        p.flush()
        p.clock.now = 166.0  # past the last-minute rekey age of a's initiator keypair
    pkt = b"" if payload is None else ip4("10.0.0.2", "10.0.0.1", payload)
    d = by_packet.b.encrypt(by_packet.pb, pkt, 166.0)  # b is the responder: no rekey on send
    by_hook.b.note_sent(by_hook.pb, len(d), bool(pkt), 166.0)
    assert _bookkeeping(by_packet.pb) == _bookkeeping(by_hook.pb)
    r = by_packet.a.decrypt(d, roamed, 166.0)
    assert (r is None) == (payload is None)
    by_hook.a.note_received(by_hook.pa, len(d), roamed, bool(pkt), 166.0)
    assert _bookkeeping(by_packet.pa) == _bookkeeping(by_hook.pa)
    assert by_hook.pa.endpoint == roamed and by_hook.pa.timers.sent_last_minute_handshake
    assert [len(o.data) for o in by_hook.a.datagrams_to_send()] == [148]  # the rekey it started
    assert [len(o.data) for o in by_packet.a.datagrams_to_send()] == [148]
