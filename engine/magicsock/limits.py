"""Admission limits for network input (sans-IO): token buckets, per-source limits, a bounded batch hand-off."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

_T = TypeVar("_T")

# Batch.put results
FIRST = 1  # queued into an empty batch: the caller schedules one drain on the loop
QUEUED = 0  # queued behind others: a drain is already scheduled
FULL = -1  # dropped: the batch is at its limit


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full. `now` is passed in (monotonic seconds)."""

    rate: float
    burst: float
    tokens: float = -1.0  # < 0: not yet used (full on first use)
    last: float = 0.0

    def take(self, now: float, n: float = 1.0) -> bool:
        """Spend `n` tokens if there are enough; a clock going backwards refills nothing."""
        if self.tokens < 0:
            self.tokens, self.last = self.burst, now
        elif now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def idle_full(self, now: float) -> bool:
        """Would this bucket be full again at `now`? (then forgetting it changes nothing)"""
        return self.tokens < 0 or self.tokens + (now - self.last) * self.rate >= self.burst


class SourceLimiter:
    """One TokenBucket per source key (an IP address), at most `max_sources` of them.

    When the table is full, buckets that have refilled completely are forgotten; if none has,
    new sources share one overflow bucket, so a spray of spoofed sources costs a bounded
    table and a bounded rate. Single-threaded: the socket reader thread owns it."""

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[object, TokenBucket] = {}
        self._overflow = TokenBucket(rate, burst)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: object, now: float) -> bool:
        b = self._buckets.get(source)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets = {k: v for k, v in self._buckets.items() if not v.idle_full(now)}
            if len(self._buckets) >= self.max_sources:
                return self._overflow.take(now)
            b = self._buckets[source] = TokenBucket(self.rate, self.burst)
        return b.take(now)


class Batch(Generic[_T]):
    """A bounded list handed from a producer thread to the event loop in one piece.

    The producer `put`s; on FIRST it schedules a single drain (one loop wakeup per batch, not
    per packet); the loop `take`s everything queued so far. Beyond `limit` items put returns
    FULL and the caller counts the drop. `peak` is the high-water mark (for status)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.peak = 0
        self._items: list[_T] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _T) -> int:
        with self._lock:
            n = len(self._items)
            if n >= self.limit:
                return FULL
            self._items.append(item)
            if n + 1 > self.peak:
                self.peak = n + 1
            return FIRST if n == 0 else QUEUED

    def take(self) -> list[_T]:
        with self._lock:
            items, self._items = self._items, []
            return items
