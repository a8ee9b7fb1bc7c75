"""mac1/mac2 and cookies (whitepaper §5.3, §5.4.4, §5.4.7), and the per-source handshake rate limiter.

Responder side: CookieChecker checks mac1 on every handshake message; under load it also
demands a valid mac2 (a MAC keyed by a cookie bound to the sender's IP:port and a secret
that rotates every 120 s), and answers messages without one with a CookieReply.
Initiator side: CookieGenerator writes mac1 (and mac2 while it holds a cookie younger than
120 s) into outgoing handshake messages, and consumes CookieReplies.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from engine.wg import crypto
from engine.wg.constants import (
    COOKIE_REFRESH_TIME,
    LABEL_COOKIE,
    LABEL_MAC1,
    RATE_LIMIT_BURST,
    RATE_LIMIT_GC_AGE,
    RATE_LIMIT_PACKETS_PER_SECOND,
)
from engine.wg.crypto import AuthenticationError
from engine.wg.messages import CookieReply

_MAC = crypto.MAC_SIZE


def mac1_key(public_key: bytes) -> bytes:
    """HASH(LABEL_MAC1 || S_pub) of the message's receiver."""
    return crypto.hash_(LABEL_MAC1, bytes(public_key))


def cookie_key(public_key: bytes) -> bytes:
    """HASH(LABEL_COOKIE || S_pub) of the cookie reply's sender."""
    return crypto.hash_(LABEL_COOKIE, bytes(public_key))


def compute_mac1(key: bytes, msg: bytes) -> bytes:
    """mac1 = MAC(key, msg[:-32])."""
    return crypto.mac(key, msg[: len(msg) - 2 * _MAC])


def compute_mac2(cookie: bytes, msg: bytes) -> bytes:
    """mac2 = MAC(cookie, msg[:-16])."""
    return crypto.mac(cookie, msg[: len(msg) - _MAC])


def addr_bytes(src: object) -> bytes:
    """Bytes a cookie binds to: packed IP || big-endian port for an (ip, port) tuple."""
    if isinstance(src, tuple) and len(src) >= 2:
        try:
            return ipaddress.ip_address(src[0]).packed + int(src[1]).to_bytes(2, "big")
        except (ValueError, TypeError, OverflowError):
            pass
    return repr(src).encode()


class CookieChecker:
    """Responder side: mac1/mac2 checks and cookie replies for one local static key."""

    def __init__(
        self, public_key: bytes, random_bytes: Callable[[int], bytes], *, refresh_time: float = COOKIE_REFRESH_TIME
    ) -> None:
        self._mac1_key = mac1_key(public_key)
        self._cookie_key = cookie_key(public_key)
        self._random_bytes = random_bytes
        self._refresh = refresh_time
        self._secret = random_bytes(32)
        self._secret_set: float | None = None  # None: never valid (no cookie handed out yet)

    def check_mac1(self, msg: bytes) -> bool:
        n = len(msg)
        want = crypto.mac(self._mac1_key, msg[: n - 2 * _MAC])
        return hmac.compare_digest(want, msg[n - 2 * _MAC : n - _MAC])

    def _cookie(self, src: bytes) -> bytes:
        return crypto.mac(self._secret, src)

    def check_mac2(self, msg: bytes, src: object, now: float) -> bool:
        """True if mac2 was made with a cookie we issued to ``src`` within the refresh time."""
        if self._secret_set is None or now - self._secret_set > self._refresh:
            return False
        n = len(msg)
        want = crypto.mac(self._cookie(addr_bytes(src)), msg[: n - _MAC])
        return hmac.compare_digest(want, msg[n - _MAC :])

    def create_reply(self, msg: bytes, receiver: int, src: object, now: float) -> CookieReply:
        """A cookie reply to a handshake ``msg`` (its mac1 is the AD) from ``src``."""
        if self._secret_set is None or now - self._secret_set > self._refresh:
            self._secret = self._random_bytes(32)
            self._secret_set = now
        n = len(msg)
        cookie = self._cookie(addr_bytes(src))
        nonce = self._random_bytes(crypto.XNONCE_SIZE)
        enc = crypto.xaead_encrypt(self._cookie_key, nonce, cookie, msg[n - 2 * _MAC : n - _MAC])
        return CookieReply(receiver, nonce, enc)


class CookieGenerator:
    """Initiator side (one per peer): writes mac1/mac2 and learns cookies from replies."""

    def __init__(self, peer_public_key: bytes, *, refresh_time: float = COOKIE_REFRESH_TIME) -> None:
        self._mac1_key = mac1_key(peer_public_key)
        self._cookie_key = cookie_key(peer_public_key)
        self._refresh = refresh_time
        self._last_mac1: bytes | None = None
        self._cookie: bytes | None = None
        self._cookie_set = 0.0

    def add_macs(self, msg: bytes, now: float) -> bytes:
        """Return ``msg`` with mac1 and (if a fresh cookie is held) mac2 filled in."""
        n = len(msg)
        body = msg[: n - 2 * _MAC]
        m1 = crypto.mac(self._mac1_key, body)
        self._last_mac1 = m1
        m2 = bytes(_MAC)
        if self._cookie is not None and now - self._cookie_set <= self._refresh:
            m2 = crypto.mac(self._cookie, body + m1)
        return body + m1 + m2

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Decrypt a cookie reply (AD = the mac1 we last sent); False if it does not verify."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = crypto.xaead_decrypt(self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1)
        except AuthenticationError:
            return False
        if len(cookie) != _MAC:
            return False
        self._cookie = cookie
        self._cookie_set = now
        self._last_mac1 = None
        return True

    @property
    def has_cookie(self) -> bool:
        return self._cookie is not None


class RateLimiter:
    """Token bucket per source IP (20 handshakes/s, burst 5; IPv6 keyed by /64), fed ``now``.

    Integer nanosecond tokens with the Linux semantics (``tokens >= cost``, a new source
    starts with burst - 1 tokens), so exactly ``burst`` back-to-back handshakes pass.
    """

    def __init__(
        self,
        *,
        per_second: int = RATE_LIMIT_PACKETS_PER_SECOND,
        burst: int = RATE_LIMIT_BURST,
        gc_age: float = RATE_LIMIT_GC_AGE,
    ) -> None:
        self._cost = 1_000_000_000 // per_second
        self._max = self._cost * burst
        self._gc_age_ns = int(gc_age * 1e9)
        self._buckets: dict[object, list[int]] = {}  # key -> [tokens_ns, last_ns]
        self._last_gc = 0

    @staticmethod
    def key_for(src: object) -> object:
        """The bucket key: the IP of an (ip, port) tuple; an IPv6 address counts by its /64."""
        if isinstance(src, tuple) and src:
            host = src[0]
            if isinstance(host, str) and ":" in host:
                try:
                    return ipaddress.IPv6Address(host.split("%")[0]).packed[:8]
                except ValueError:
                    return host
            return host
        return src

    def allow(self, src: object, now: float) -> bool:
        t = int(now * 1e9)
        if t - self._last_gc > self._gc_age_ns:
            self._gc(t)
        key = self.key_for(src)
        b = self._buckets.get(key)
        if b is None:
            self._buckets[key] = [self._max - self._cost, t]
            return True
        tokens = min(self._max, b[0] + max(0, t - b[1]))
        b[1] = t
        if tokens >= self._cost:
            b[0] = tokens - self._cost
            return True
        b[0] = tokens
        return False

    def _gc(self, t: int) -> None:
        self._last_gc = t
        stale = [k for k, b in self._buckets.items() if t - b[1] > self._gc_age_ns]
        for k in stale:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
