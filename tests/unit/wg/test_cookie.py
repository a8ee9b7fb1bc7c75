"""mac1/mac2, cookie replies under load, secret rotation, and the per-source rate limiter."""

from __future__ import annotations

from engine.wg import cookie
from engine.wg.cookie import CookieChecker, CookieGenerator, RateLimiter
from engine.wg.drops import DropReason
from engine.wg.messages import CookieReply

from .conftest import A_ADDR, B_ADDR, DetRandom, Pair, ip4


def _initiation(p: Pair) -> bytes:
    p.pa.timers.last_sent_handshake = None
    p.a._send_initiation_locked(p.pa, p.now, is_retry=False)
    (o,) = p.a.datagrams_to_send()
    return o.data


def test_mac1_layout():
    key = cookie.mac1_key(bytes(32))
    msg = bytes(range(100)) + bytes(32)
    assert cookie.compute_mac1(key, msg) == cookie.crypto.mac(key, msg[:100])
    assert cookie.compute_mac2(b"c" * 16, msg) == cookie.crypto.mac(b"c" * 16, msg[:116])


def test_checker_generator_roundtrip_and_rotation():
    rnd = DetRandom(1)
    pub = bytes(range(32))
    checker, gen = CookieChecker(pub, rnd), CookieGenerator(pub)
    msg = gen.add_macs(bytes(116) + bytes(32), now=0.0)
    assert checker.check_mac1(msg)
    assert not checker.check_mac2(msg, A_ADDR, 0.0)  # no cookie issued yet
    reply = checker.create_reply(msg, 77, A_ADDR, now=0.0)
    assert CookieReply.parse(reply.marshal()) == reply
    assert gen.consume_reply(reply, now=0.5)
    assert not gen.consume_reply(reply, now=0.6)  # only once per sent mac1
    msg2 = gen.add_macs(bytes(116) + bytes(32), now=1.0)
    assert checker.check_mac2(msg2, A_ADDR, 1.0)
    assert not checker.check_mac2(msg2, ("192.0.2.99", 51820), 1.0)  # cookie is bound to IP:port
    assert not checker.check_mac2(msg2, (A_ADDR[0], 1), 1.0)
    # the secret is valid for 120 s, then a new reply (new secret) is needed
    assert not checker.check_mac2(msg2, A_ADDR, 120.1)
    checker.create_reply(msg2, 77, A_ADDR, now=120.1)
    assert not checker.check_mac2(msg2, A_ADDR, 120.2)  # old cookie, new secret
    # the generator stops attaching an old cookie after 120 s
    msg3 = gen.add_macs(bytes(116) + bytes(32), now=121.0)
    assert msg3[-16:] == bytes(16)


def test_reply_for_someone_else_is_refused():
    rnd = DetRandom(2)
    checker = CookieChecker(bytes(range(32)), rnd)
    gen = CookieGenerator(bytes(range(32)))
    other = CookieGenerator(bytes(range(32)))
    msg = gen.add_macs(bytes(148), now=0.0)
    other.add_macs(b"\x01" * 148, now=0.0)  # a different mac1
    reply = checker.create_reply(msg, 1, A_ADDR, now=0.0)
    assert not other.consume_reply(reply, now=0.0)
    tampered = CookieReply(
        reply.receiver, reply.nonce, bytes([reply.encrypted_cookie[0] ^ 1]) + reply.encrypted_cookie[1:]
    )
    assert not gen.consume_reply(tampered, now=0.0)
    assert gen.consume_reply(reply, now=0.0)


def test_under_load_flow_through_devices():
    p = Pair()
    # bad mac1 is dropped, load or not
    bad = bytearray(_initiation(p))
    bad[120] ^= 1
    assert p.b.decrypt(bytes(bad), A_ADDR, p.now) == DropReason.BAD_MAC1
    p.b.set_under_load(p.now)
    # valid mac1 but no mac2 under load -> cookie reply, no handshake
    init = _initiation(p)
    assert init[-16:] == bytes(16)
    assert p.b.decrypt(init, A_ADDR, p.now) == DropReason.COOKIE_SENT
    (reply,) = p.b.datagrams_to_send()
    assert reply.peer is None and reply.addr == A_ADDR and len(reply.data) == 64
    assert p.pb.keypairs.all() == []
    # the initiator consumes it; its next initiation carries mac2 and is accepted
    assert p.a.decrypt(reply.data, B_ADDR, p.now) is None
    assert p.pa.cookie_gen.has_cookie
    p.clock.now += 0.1
    init2 = _initiation(p)
    assert init2[-16:] != bytes(16)
    assert p.b.decrypt(init2, A_ADDR, p.now) is None
    (resp,) = p.b.datagrams_to_send()
    assert len(resp.data) == 92
    # the same mac2 from another source address does not count
    p.clock.now += 0.1
    init3 = _initiation(p)
    assert p.b.decrypt(init3, ("192.0.2.50", 4000), p.now) == DropReason.COOKIE_SENT
    c = p.b.counters()
    assert c["drop_cookie_sent"] == 2 and c["drop_bad_mac1"] == 1
    # load expires after 1 s: no cookies demanded
    p.clock.now += 1.5
    init4 = _initiation(p)
    assert p.b.decrypt(init4, ("192.0.2.50", 4000), p.now) is None


def test_under_load_rate_limit_per_source():
    p = Pair()
    p.b.set_under_load(0.0, duration=100.0)
    gen_reply = None
    init = _initiation(p)
    assert p.b.decrypt(init, A_ADDR, 0.0) == DropReason.COOKIE_SENT
    (gen_reply,) = p.b.datagrams_to_send()
    p.a.decrypt(gen_reply.data, B_ADDR, 0.0)
    results = []
    for i in range(8):  # 8 valid-mac2 initiations within 7 ms: burst 5 passes, the rest are limited
        p.clock.now = 0.001 * i
        results.append(p.b.decrypt(_initiation(p), A_ADDR, p.now))
    assert results.count(DropReason.RATE_LIMITED) == 3


def test_rate_limiter_token_bucket():
    rl = RateLimiter()
    assert [rl.allow(("10.0.0.1", 1), 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert rl.allow(("10.0.0.2", 1), 0.0)  # other sources are independent
    assert not rl.allow(("10.0.0.1", 9), 0.049)  # port does not matter; not yet refilled
    assert rl.allow(("10.0.0.1", 1), 0.0501)  # one token per 50 ms (20/s)
    assert not rl.allow(("10.0.0.1", 1), 0.0502)
    # a steady 20/s is sustained indefinitely
    assert all(rl.allow(("10.0.0.3", 1), 10 + i * 0.05) for i in range(100))
    # IPv6 sources share a bucket per /64
    assert [rl.allow(("2001:db8::%d" % i, 1), 20.0) for i in range(6)] == [True] * 5 + [False]
    assert rl.allow(("2001:db8:0:1::1", 1), 20.0)
    # idle entries are forgotten
    rl.allow(("10.9.9.9", 1), 30.0)
    assert len(rl) == 1


def test_cookie_reply_to_unknown_index_dropped():
    p = Pair()
    reply = CookieReply(12345, bytes(24), bytes(32)).marshal()
    assert p.a.decrypt(reply, B_ADDR, 0.0) == DropReason.UNKNOWN_INDEX


def test_data_flows_after_cookie_dance():
    p = Pair()
    p.b.set_under_load(0.0, duration=1000.0)
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    assert p.delivered_to_b == []  # first initiation answered by a cookie
    p.advance(6.0)  # retransmit carries mac2
    assert len(p.delivered_to_b) == 1
