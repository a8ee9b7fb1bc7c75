"""Shared builders for the pure WireGuard core tests: deterministic randomness, a fake wall clock, pairs."""

from __future__ import annotations

import random

import pytest

from engine.wg.constants import Timings
from engine.wg.core import DeviceCore

WALL_BASE = 1_700_000_000.0  # fake UNIX time at monotonic 0


class DetRandom:
    """Deterministic byte source for keys, indexes and nonces (tests only)."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)


class FakeClock:
    """Monotonic ``now`` driven by the test; ``wall()`` is WALL_BASE + now."""

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return WALL_BASE + self.now


def ip4(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    """A minimal IPv4 packet (no checksum needed by the core)."""
    import ipaddress

    total = 20 + len(payload)
    return (
        bytes([0x45, 0])
        + total.to_bytes(2, "big")
        + bytes(8)
        + ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + payload
    )


def ip6(src: str, dst: str, payload: bytes = b"hello6") -> bytes:
    import ipaddress

    return (
        bytes([0x60, 0, 0, 0])
        + len(payload).to_bytes(2, "big")
        + bytes([17, 64])
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


A_ADDR = ("192.0.2.1", 51820)
B_ADDR = ("192.0.2.2", 51820)


class Pair:
    """Two DeviceCores wired by a lossless in-memory link, driven by one FakeClock."""

    def __init__(
        self, timings: Timings = Timings(), seed: int = 7, psk: bytes | None = None, keepalive_a: float = 0
    ) -> None:
        self.clock = FakeClock()
        rnd = DetRandom(seed)
        self.a = DeviceCore(
            rnd(32), wall_clock=self.clock.wall, timings=timings, random_bytes=rnd, rng=random.Random(seed)
        )
        self.b = DeviceCore(
            rnd(32), wall_clock=self.clock.wall, timings=timings, random_bytes=rnd, rng=random.Random(seed + 1)
        )
        self.pa = self.a.add_peer(
            self.b.public_key, preshared_key=psk, endpoint=B_ADDR, allowed_ips=["10.0.0.2/32", "fd00::2/128"]
        )
        self.pb = self.b.add_peer(
            self.a.public_key, preshared_key=psk, endpoint=A_ADDR, allowed_ips=["10.0.0.1/32", "fd00::1/128"]
        )
        if keepalive_a:
            self.a.update_peer(self.pa, persistent_keepalive=keepalive_a, now=0.0)
        self.delivered_to_a: list[bytes] = []
        self.delivered_to_b: list[bytes] = []
        self.wire_log: list[tuple[str, bytes]] = []  # (direction, datagram)

    @property
    def now(self) -> float:
        return self.clock.now

    def _deliver(self, direction: str, data: bytes) -> None:
        """Hand `data` to the receiving side of `direction` ("a->b" or "b->a"); record what comes out of its TUN."""
        if direction == "a->b":
            dst, src, sink = self.b, A_ADDR, self.delivered_to_b
        else:
            dst, src, sink = self.a, B_ADDR, self.delivered_to_a
        r = dst.decrypt(data, src, self.now)
        if isinstance(r, tuple):
            sink.append(r[1])

    def flush(self, drop=lambda direction, data: False, first=None) -> int:
        """Move queued datagrams both ways until quiet; returns how many moved."""
        moved = 0
        for _ in range(100):
            outs = (
                list(first or ())
                + [("a->b", o) for o in self.a.datagrams_to_send()]
                + [("b->a", o) for o in self.b.datagrams_to_send()]
            )
            first = None
            if not outs:
                return moved
            for direction, o in outs:
                self.wire_log.append((direction, o.data))
                moved += 1
                if not drop(direction, o.data):
                    self._deliver(direction, o.data)
        raise AssertionError("link did not go quiet")

    def _send(self, direction: str, packet: bytes, drop) -> None:
        src, peer = (self.a, self.pa) if direction == "a->b" else (self.b, self.pb)
        d = src.encrypt(peer, packet, self.now)
        if d is not None:
            self.wire_log.append((direction, d))
            if not drop(direction, d):
                self._deliver(direction, d)
        self.flush(drop)

    def send_a(self, packet: bytes, drop=lambda d, x: False) -> None:
        self._send("a->b", packet, drop)

    def send_b(self, packet: bytes, drop=lambda d, x: False) -> None:
        self._send("b->a", packet, drop)

    def advance(self, seconds: float, step: float = 0.05, drop=lambda d, x: False) -> None:
        """Advance the clock in steps, firing timers on both sides and moving datagrams."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + step)
            first = [("a->b", o) for o in self.a.handle_timers(self.now)]
            first += [("b->a", o) for o in self.b.handle_timers(self.now)]
            self.flush(drop, first)


def established_pair(seed: int = 11) -> Pair:
    """A Pair whose first packet a -> b went through: the handshake is done, both have a current session."""
    p = Pair(seed=seed)
    p.send_a(ip4("10.0.0.1", "10.0.0.2"))
    return p


def valid_datagrams(p: Pair) -> list[bytes]:
    """One of each message `p` can produce (p from ``established_pair``; b is left under load).

    The handshake and first data packets from its wire log, then a cookie reply from b to a retried initiation.
    """
    msgs = [d for _, d in p.wire_log]
    p.b.set_under_load(0.0)
    p.pa.timers.last_sent_handshake = None
    p.a._send_initiation_locked(p.pa, 0.0, is_retry=False)
    init = p.a.datagrams_to_send()[0].data
    p.b.decrypt(init, A_ADDR, 0.0)
    return msgs + [o.data for o in p.b.datagrams_to_send()]


@pytest.fixture
def pair() -> Pair:
    return Pair()
