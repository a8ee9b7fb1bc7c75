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
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(8)
            + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload)


def ip6(src: str, dst: str, payload: bytes = b"hello6") -> bytes:
    import ipaddress

    return (bytes([0x60, 0, 0, 0]) + len(payload).to_bytes(2, "big") + bytes([17, 64])
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


A_ADDR = ("192.0.2.1", 51820)
B_ADDR = ("192.0.2.2", 51820)


class Pair:
    """Two DeviceCores wired by a lossless in-memory link, driven by one FakeClock."""

    def __init__(self, timings: Timings = Timings(), seed: int = 7, psk: bytes | None = None,
                 keepalive_a: float = 0) -> None:
        self.clock = FakeClock()
        rnd = DetRandom(seed)
        self.a = DeviceCore(rnd(32), wall_clock=self.clock.wall, timings=timings, random_bytes=rnd,
                            rng=random.Random(seed))
        self.b = DeviceCore(rnd(32), wall_clock=self.clock.wall, timings=timings, random_bytes=rnd,
                            rng=random.Random(seed + 1))
        self.pa = self.a.add_peer(self.b.public_key, preshared_key=psk, endpoint=B_ADDR,
                                  allowed_ips=["10.0.0.2/32", "fd00::2/128"])
        self.pb = self.b.add_peer(self.a.public_key, preshared_key=psk, endpoint=A_ADDR,
                                  allowed_ips=["10.0.0.1/32", "fd00::1/128"])
        if keepalive_a:
            self.a.update_peer(self.pa, persistent_keepalive=keepalive_a, now=0.0)
        self.delivered_to_a: list[bytes] = []
        self.delivered_to_b: list[bytes] = []
        self.wire_log: list[tuple[str, bytes]] = []  # (direction, datagram)

    @property
    def now(self) -> float:
        return self.clock.now

    def flush(self, drop=lambda direction, data: False, first=None) -> int:
        """Move queued datagrams both ways until quiet; returns how many moved."""
        moved = 0
        for _ in range(100):
            outs = list(first or ()) + [("a->b", o) for o in self.a.datagrams_to_send()] + [("b->a", o) for o in self.b.datagrams_to_send()]
            first = None
            if not outs:
                return moved
            for direction, o in outs:
                self.wire_log.append((direction, o.data))
                moved += 1
                if drop(direction, o.data):
                    continue
                dst, src, sink = (self.b, A_ADDR, self.delivered_to_b) if direction == "a->b" else (self.a, B_ADDR, self.delivered_to_a)
                r = dst.decrypt(o.data, src, self.now)
                if isinstance(r, tuple):
                    sink.append(r[1])
        raise AssertionError("link did not go quiet")

    def send_a(self, packet: bytes, drop=lambda d, x: False) -> None:
        d = self.a.encrypt(self.pa, packet, self.now)
        if d is not None:
            self.wire_log.append(("a->b", d))
            if not drop("a->b", d):
                r = self.b.decrypt(d, A_ADDR, self.now)
                if isinstance(r, tuple):
                    self.delivered_to_b.append(r[1])
        self.flush(drop)

    def send_b(self, packet: bytes, drop=lambda d, x: False) -> None:
        d = self.b.encrypt(self.pb, packet, self.now)
        if d is not None:
            self.wire_log.append(("b->a", d))
            if not drop("b->a", d):
                r = self.a.decrypt(d, B_ADDR, self.now)
                if isinstance(r, tuple):
                    self.delivered_to_a.append(r[1])
        self.flush(drop)

    def advance(self, seconds: float, step: float = 0.05, drop=lambda d, x: False) -> None:
        """Advance the clock in steps, firing timers on both sides and moving datagrams."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + step)
            first = [("a->b", o) for o in self.a.handle_timers(self.now)]
            first += [("b->a", o) for o in self.b.handle_timers(self.now)]
            self.flush(drop, first)


@pytest.fixture
def pair() -> Pair:
    return Pair()
