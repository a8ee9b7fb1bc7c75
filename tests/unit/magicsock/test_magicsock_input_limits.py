"""Attacks on magicsock's network input, against the pure cores with a fake clock: queues, rates, CallMeMaybe, pongs."""

from __future__ import annotations

import itertools
import os

import nacl.public

from engine.dataplane.endpoint import UdpEndpoint
from engine.disco import box as dbox
from engine.disco.message import MAX_CALL_ME_MAYBE_ENDPOINTS, CallMeMaybe, Ping, Pong, parse
from engine.magicsock import constants as C
from engine.magicsock.bind import MagicBind, PeerEndpoint
from engine.magicsock.conn import MagicConn, PeerConfig
from engine.magicsock.endpoint import PeerPath, SendPing
from engine.magicsock.limits import FIRST, FULL, QUEUED, Batch, SourceLimiter, TokenBucket

PEER_EP = ("198.51.100.7", 41641)
ATTACKER = ("203.0.113.66", 5555)


def _rand():
    c = itertools.count(1)
    return lambda n: next(c).to_bytes(n, "big")


def _pings(actions):
    return [a for a in actions if isinstance(a, SendPing)]


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeLoop:
    """Records call_soon_threadsafe: the reader thread's only way onto the loop."""

    def __init__(self):
        self.calls = []

    def call_soon_threadsafe(self, fn, *args):
        self.calls.append((fn, args))


# ---- limits core ------------------------------------------------------------------------------


def test_token_bucket_burst_then_rate():
    b = TokenBucket(rate=10.0, burst=5.0)
    assert sum(b.take(0.0) for _ in range(100)) == 5
    assert sum(b.take(1.0) for _ in range(100)) == 5  # 10 refilled, capped at the burst
    assert sum(b.take(1.3) for _ in range(100)) == 3
    assert not b.take(0.5)  # clock going backwards refills nothing


def test_source_limiter_flood_from_one_source_does_not_starve_another():
    lim = SourceLimiter(rate=100.0, burst=200.0, max_sources=16)
    sent = 50_000
    ok = sum(lim.allow("203.0.113.66", 0.0) for _ in range(sent))
    assert ok == 200  # the burst, nothing more at a frozen clock
    assert lim.allow("198.51.100.7", 0.0)  # a real peer is unaffected
    # one second later the flooder gets its rate again, no more
    assert sum(lim.allow("203.0.113.66", 1.0) for _ in range(sent)) == 100


def test_source_limiter_spoofed_sources_bounded_table_and_rate():
    lim = SourceLimiter(rate=100.0, burst=200.0, max_sources=64)
    srcs = [f"2001:db8::{i:x}" for i in range(100_000)]
    ok = sum(lim.allow(s, 0.0) for s in srcs)
    assert len(lim) == 64  # the table never grows past its cap
    assert ok == 64 + 200  # 64 tracked sources + the shared overflow bucket's burst
    # idle buckets refill and are forgotten, so new sources get their own again
    assert lim.allow("2001:db8:1::1", 10.0) and len(lim) == 1


def test_batch_bounded_one_wakeup_per_batch():
    b = Batch(limit=256)
    res = [b.put(i) for i in range(10_000)]
    assert res.count(FIRST) == 1 and res.count(QUEUED) == 255 and res.count(FULL) == 10_000 - 256
    assert len(b) == 256 and b.peak == 256
    assert b.take() == list(range(256)) and len(b) == 0
    assert b.put("x") == FIRST  # empty again: the next put schedules the next drain


def test_bind_queue_bounded_and_counted():
    bind = MagicBind(conn=None, max_queue=1024)
    sent = 20_000
    accepted = sum(bind.deliver(b"\x04\x00\x00\x00" + b"x" * 100, PeerEndpoint(b"k" * 32)) for _ in range(sent))
    assert accepted == 1024 and bind._rx.qsize() == 1024 and bind.peak == 1024
    buf = bytearray(2048)
    n, _seg, ep = bind.recv_into(buf, block=False)
    assert n == 104 and ep == PeerEndpoint(b"k" * 32)
    assert bind.deliver(b"\x04\x00\x00\x00y", None)  # room again after a read


# ---- CallMeMaybe amplification ----------------------------------------------------------------


def test_callmemaybe_parser_caps_endpoints():
    many = tuple(("203.0.113.77", 20000 + i) for i in range(3000))
    msg = parse(CallMeMaybe(endpoints=many).marshal())
    assert len(msg.endpoints) == MAX_CALL_ME_MAYBE_ENDPOINTS == C.MAX_CMM_ENDPOINTS
    assert msg.endpoints == many[:MAX_CALL_ME_MAYBE_ENDPOINTS] and msg.dropped == 3000 - 32


def test_callmemaybe_flood_pings_are_capped_and_rate_limited():
    p = PeerPath(node_key=b"n" * 32, disco_key=b"d" * 32, random=_rand(), home_derp=1)
    p.set_netmap_endpoints([PEER_EP], 0.0)
    # one CallMeMaybe naming 1000 victim addresses
    victims = [("203.0.113.77", 20000 + i) for i in range(1000)]
    acts = _pings(p.handle_call_me_maybe(victims, 0.0))
    assert len(acts) == 1 + C.MAX_CMM_ENDPOINTS  # the netmap endpoint + the capped list
    assert p.counters.cmm_endpoints_dropped == 1000 - C.MAX_CMM_ENDPOINTS
    # 200 more CallMeMaybes per second for 10 s, each with fresh victims
    total, now = len(acts), 0.0
    for i in range(2000):
        now = i * 0.005
        batch = [("203.0.113.77", 30000 + (i * 32 + j) % 30000) for j in range(32)]
        total += len(_pings(p.handle_call_me_maybe(batch, now)))
    assert len(p.candidates) <= C.MAX_CANDIDATES
    assert total <= C.PEER_PING_BURST + C.PEER_PING_RATE * now + 1
    assert p.counters.pings_rate_limited > 2000 * 30
    assert len(p.pending) <= C.PEER_PING_BURST + C.PEER_PING_RATE * (now + 1)
    # a later CallMeMaybe replaces the earlier one's endpoints (tailscale's mark and sweep)
    p.handle_call_me_maybe([("203.0.113.78", 1)], now + 100)
    assert {c.source for c in p.candidates.values()} == {"netmap", "cmm"}
    assert [a for a, c in p.candidates.items() if c.source == "cmm"] == [("203.0.113.78", 1)]


def test_candidates_bounded_by_ping_sources():
    p = PeerPath(node_key=b"n" * 32, disco_key=b"d" * 32, random=_rand())
    p.set_netmap_endpoints([PEER_EP], 0.0)
    for i in range(5000):
        p.handle_ping_from(("203.0.113.9", 1000 + i), i * 0.01)
    assert len(p.candidates) == C.MAX_CANDIDATES and PEER_EP in p.candidates  # netmap never evicted
    assert p.counters.candidates_dropped == 5000 + 1 - C.MAX_CANDIDATES


# ---- address trust only after a verified pong -------------------------------------------------


def test_pong_from_other_address_does_not_verify():
    p = PeerPath(node_key=b"n" * 32, disco_key=b"d" * 32, random=_rand())
    p.set_netmap_endpoints([PEER_EP], 0.0)
    (ping,) = _pings(p.note_send(0.0))
    assert p.handle_pong(ping.txid, ATTACKER, 0.01) is False  # right TxID, wrong source
    assert p.best_addr is None and not p.trusted(0.02) and p.counters.pong_addr_mismatch == 1
    assert p.handle_pong(ping.txid, PEER_EP, 0.02) is True  # the genuine pong still counts
    assert p.best_addr == PEER_EP and p.trusted(0.03)


def _conn_with_peer(clock):
    peer_disco = dbox.DiscoCrypto(private=nacl.public.PrivateKey.generate(), random=os.urandom)
    peer_node = bytes(nacl.public.PrivateKey.generate().public_key)
    ms = MagicConn(nacl.public.PrivateKey.generate(), clock=clock, local_addrs=lambda: ["192.0.2.1"])
    ms.set_peers([PeerConfig.make(peer_node, peer_disco.public, 0, [f"{PEER_EP[0]}:{PEER_EP[1]}"])])
    return ms, peer_disco, peer_node


def test_reader_flood_is_rate_limited_batched_and_junk_never_reaches_loop():
    clock = Clock()
    ms, peer_disco, _nk = _conn_with_peer(clock)
    loop = FakeLoop()
    # 1. junk with random sender keys: dropped in the reader thread, no loop work at all
    junk = [dbox.MAGIC + os.urandom(32) + os.urandom(60) for _ in range(64)]
    for i in range(20_000):
        ms._demux(junk[i % 64], ATTACKER, loop)
    assert loop.calls == [] and ms.counters.disco_dropped == 20_000
    # 2. disco-shaped junk claiming the real peer's (public) disco key, from one source
    forged = dbox.MAGIC + peer_disco.public + os.urandom(80)
    for _ in range(20_000):
        ms._demux(forged, ATTACKER, loop)
    assert len(loop.calls) == 1  # one wakeup for the whole batch, not one per packet
    assert len(ms._ctl) == C.CTL_SOURCE_BURST
    assert ms.counters.ctl_rate_limited == 20_000 - C.CTL_SOURCE_BURST
    # 3. the same from 1000 spoofed sources: the batch is bounded
    for i in range(20_000):
        ms._demux(forged, (f"198.18.{i % 1000 // 250}.{i % 250 + 1}", 4000), loop)
    assert len(ms._ctl) == C.CTL_QUEUE_MAX and ms.counters.ctl_queue_dropped > 0
    assert len(loop.calls) == 1
    # 4. STUN-looking responses with no netcheck waiting: dropped in the reader
    stun_like = b"\x01\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    for _ in range(1000):
        ms._demux(stun_like, ATTACKER, loop)
    assert ms.counters.stun_unsolicited == 1000 and len(ms._ctl) == C.CTL_QUEUE_MAX
    # the loop drains the batch: every bad box is a counted drop, never an exception
    fn, args = loop.calls[0]
    before = ms.counters.disco_dropped
    fn(*args)
    assert len(ms._ctl) == 0 and ms.counters.ctl_queue_peak == C.CTL_QUEUE_MAX
    assert ms.counters.disco_dropped == before + C.CTL_QUEUE_MAX and ms.counters.disco_rx == 0


def test_wireguard_attribution_only_after_verified_pong():
    clock = Clock()
    ms, peer_disco, peer_node = _conn_with_peer(clock)
    loop = FakeLoop()
    wg = b"\x04\x00\x00\x00" + b"x" * 28
    # netmap endpoint alone: not bound, WireGuard from it stays an anonymous UdpEndpoint
    ms._demux(wg, PEER_EP, loop)
    _n, _s, ep = ms.bind.recv_into(bytearray(2048), block=False)
    assert ep == UdpEndpoint(*PEER_EP) and str(ep) == "198.51.100.7:41641" and ms.counters.wg_unknown_src == 1
    # a (replayable) Ping from an attacker's address: a candidate at most, never bound
    ms._handle_disco(peer_disco.seal(ms.disco_public, Ping(txid=b"t" * 12, node_key=peer_node)), ATTACKER, None, 0)
    assert ATTACKER not in ms._addr_peer
    # our ping to ATTACKER (the ping-back) answered from another address: not verified
    path = ms._peers[peer_node].path
    txid_att = next(t for t, (a, _s) in path.pending.items() if a == ATTACKER)
    ms._handle_disco(peer_disco.seal(ms.disco_public, Pong(txid=txid_att, src=PEER_EP)), PEER_EP, None, 0)
    assert PEER_EP not in ms._addr_peer and ATTACKER not in ms._addr_peer
    assert ms.counters.pong_addr_mismatch == 1
    # a pong with a TxID we never sent: not verified
    ms._handle_disco(peer_disco.seal(ms.disco_public, Pong(txid=b"z" * 12, src=PEER_EP)), PEER_EP, None, 0)
    assert PEER_EP not in ms._addr_peer
    # our discovery ping to the netmap endpoint, ponged from it: now bound and used
    acts = path.note_send(clock())
    txid = next(a.txid for a in _pings(acts) if a.addr == PEER_EP)
    ms._handle_disco(peer_disco.seal(ms.disco_public, Pong(txid=txid, src=PEER_EP)), PEER_EP, None, 0)
    assert ms._addr_peer.get(PEER_EP) == peer_node
    ms._demux(wg, PEER_EP, loop)
    _n, _s, ep = ms.bind.recv_into(bytearray(2048), block=False)
    assert ep == PeerEndpoint(peer_node)
    assert ms.peer_status()[peer_node].path == "direct"


def test_callmemaybe_via_derp_through_conn_is_capped():
    clock = Clock()
    ms, peer_disco, peer_node = _conn_with_peer(clock)
    sent = []
    ms._udp_send = lambda data, addr: sent.append(addr)  # what would go on the wire
    victims = tuple(("203.0.113.77", 20000 + i) for i in range(3000))
    for i in range(50):  # 50 CallMeMaybes in the same instant
        ms._handle_disco(peer_disco.seal(ms.disco_public, CallMeMaybe(endpoints=victims)), None, peer_node, 1)
    assert len(sent) <= C.PEER_PING_BURST
    assert ms.counters.cmm_endpoints_dropped == 50 * (3000 - C.MAX_CMM_ENDPOINTS)
    assert ms.counters.pings_rate_limited > 0
    assert not any(a in ms._addr_peer for a in victims)


def test_new_counters_are_in_the_status_counters():
    """NodeTransport.status()["Counters"] is dataclasses.asdict(conn.counters): the new drops show there."""
    import dataclasses

    from engine.magicsock.conn import MagicCounters

    d = dataclasses.asdict(MagicCounters())
    for k in (
        "rx_queue_dropped",
        "rx_queue_peak",
        "ctl_queue_dropped",
        "ctl_queue_peak",
        "ctl_rate_limited",
        "stun_unsolicited",
        "cmm_endpoints_dropped",
        "candidates_dropped",
        "pings_rate_limited",
        "pong_addr_mismatch",
        "udp_rx",
        "disco_dropped",
    ):
        assert d[k] == 0
