"""Micro-benchmark of the pure WireGuard core: transport encrypt/decrypt per packet, allowed-ips lookup.

Run: .venv/bin/python benchmarks/wg_core_bench.py [--packets N]
Prints µs per operation (best of --rounds rounds, default 5); single thread, no I/O.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from engine.wg.allowedips import AllowedIPs
from engine.wg.core import DeviceCore


def _ip4(src: str, dst: str, size: int) -> bytes:
    payload = bytes(size - 20)
    return (
        bytes([0x45, 0])
        + size.to_bytes(2, "big")
        + bytes(8)
        + ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + payload
    )


def _best(fn, n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5, help="best of this many rounds (raise on a busy machine)")
    args = ap.parse_args()
    n = args.packets
    rnd = random.Random(1)
    clock = [1.0]  # fake monotonic time; the wall clock follows it (TAI64N must increase)
    wall = lambda: 1_700_000_000.0 + clock[0]  # noqa: E731
    a = DeviceCore(rnd.randbytes(32), wall_clock=wall, random_bytes=rnd.randbytes)
    b = DeviceCore(rnd.randbytes(32), wall_clock=wall, random_bytes=rnd.randbytes)
    pa = a.add_peer(b.public_key, endpoint=("192.0.2.2", 1), allowed_ips=["10.0.0.2/32"])
    b.add_peer(a.public_key, endpoint=("192.0.2.1", 1), allowed_ips=["10.0.0.1/32"])
    pkt = _ip4("10.0.0.1", "10.0.0.2", 1420)
    now = 1.0
    a.encrypt(pa, pkt, now)
    for o in a.datagrams_to_send():
        b.decrypt(o.data, ("192.0.2.1", 1), now)
    for o in b.datagrams_to_send():
        a.decrypt(o.data, ("192.0.2.2", 1), now)
    for o in a.datagrams_to_send():
        assert isinstance(b.decrypt(o.data, ("192.0.2.1", 1), now), tuple)

    enc = a.encrypt

    def run_encrypt(k):
        for _ in range(k):
            enc(pa, pkt, now)

    datagrams = [enc(pa, pkt, now) for _ in range(n * args.rounds)]
    it = iter(datagrams)
    dec = b.decrypt
    src = ("192.0.2.1", 1)

    def run_decrypt(k):
        for _ in range(k):
            dec(next(it), src, now)

    aead = ChaCha20Poly1305(bytes(32))
    nonce = bytes(12)

    def run_raw_aead(k):
        for _ in range(k):
            aead.encrypt(nonce, pkt, None)

    route = a.route

    def run_route(k):
        for _ in range(k):
            route(pkt)

    # a typical tailnet table: 200 peers with /32 + /128, 5 subnet routes, an exit node's /0
    t = AllowedIPs()
    for i in range(200):
        t.insert(f"100.64.{i // 250}.{i % 250 + 1}/32", i)
        t.insert(f"fd7a:115c:a1e0::{i + 1:x}/128", i)
    for j in range(5):
        t.insert(f"192.168.{j}.0/24", 1000 + j)
    t.insert("0.0.0.0/0", 9999)
    t.insert("::/0", 9999)
    ips = [ipaddress.IPv4Address(f"100.64.0.{rnd.randint(1, 200)}").packed for _ in range(1000)]
    ips += [ipaddress.IPv4Address(f"8.8.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}").packed for _ in range(1000)]
    ips6 = [ipaddress.IPv6Address(f"fd7a:115c:a1e0::{rnd.randint(1, 200):x}").packed for _ in range(1000)]
    lookup = t.lookup

    def run_lookup(k):
        for i in range(k):
            lookup(ips[i % 2000])

    def run_lookup6(k):
        for i in range(k):
            lookup(ips6[i % 1000])

    def run_handshake(k):
        for _ in range(k):
            clock[0] += 6.0
            t_now = clock[0]  # past the 5 s initiation rate limit and the 20 ms flood guard
            a._send_initiation_locked(pa, t_now, is_retry=False)
            for o in a.datagrams_to_send():
                b.decrypt(o.data, ("192.0.2.1", 1), t_now)
            for o in b.datagrams_to_send():
                a.decrypt(o.data, ("192.0.2.2", 1), t_now)
            a.datagrams_to_send()
        assert pa.keypairs.current.created == clock[0]

    print(f"{'operation':48s} µs/op")
    print(f"{'raw ChaCha20Poly1305.encrypt, 1420 B':48s} {_best(run_raw_aead, n, args.rounds):6.2f}")
    print(f"{'DeviceCore.encrypt, 1420 B IPv4':48s} {_best(run_encrypt, n, args.rounds):6.2f}")
    print(f"{'DeviceCore.decrypt, 1420 B IPv4 (+replay, src check)':48s} {_best(run_decrypt, n, args.rounds):6.2f}")
    print(f"{'DeviceCore.route (dst lookup)':48s} {_best(run_route, n, args.rounds):6.2f}")
    print(f"{'AllowedIPs.lookup IPv4 (/32, /24, /0 table)':48s} {_best(run_lookup, n, args.rounds):6.2f}")
    print(f"{'AllowedIPs.lookup IPv6 (/128, /0 table)':48s} {_best(run_lookup6, n, args.rounds):6.2f}")
    print(f"{'handshake round trip, both sides (+ keepalive)':48s} {_best(run_handshake, 50, 3):6.1f}")


if __name__ == "__main__":
    main()
