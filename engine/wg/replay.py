"""Sliding anti-replay window for transport counters (RFC 6479 style, 8128 usable bits)."""

from __future__ import annotations

from engine.wg.constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_BLOCKS

_BLOCK_BITS_LOG = 6  # 64-bit blocks
_BLOCK_BITS = 1 << _BLOCK_BITS_LOG
_RING_BLOCKS = REPLAY_WINDOW_BLOCKS  # power of two
_BLOCK_MASK = _RING_BLOCKS - 1
_BIT_MASK = _BLOCK_BITS - 1
WINDOW_SIZE = (_RING_BLOCKS - 1) * _BLOCK_BITS  # 8128: one block is the "partially new" block


class ReplayFilter:
    """Accepts each counter at most once, and none more than WINDOW_SIZE behind the newest.

    A ring of 128 64-bit blocks: moving forward clears the blocks skipped over, so the
    cost is O(1) per packet (at most 128 block clears on a big jump). Not thread-safe:
    the caller serialises ``validate`` per keypair.
    """

    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * _RING_BLOCKS

    def reset(self) -> None:
        self.last = 0
        self.ring = [0] * _RING_BLOCKS

    def validate(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """True if ``counter`` is new (and marks it seen); False for replays, too-old or ≥ limit."""
        if counter >= limit:
            return False
        ring = self.ring
        index_block = counter >> _BLOCK_BITS_LOG
        last = self.last
        if counter > last:  # move the window forward, clearing the blocks it enters
            current = last >> _BLOCK_BITS_LOG
            diff = index_block - current
            if diff:
                if diff >= _RING_BLOCKS:
                    ring[:] = [0] * _RING_BLOCKS
                else:
                    for i in range(current + 1, index_block + 1):
                        ring[i & _BLOCK_MASK] = 0
            self.last = counter
        elif last - counter > WINDOW_SIZE:  # behind the window
            return False
        index_block &= _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index_block]
        if old & bit:
            return False
        ring[index_block] = old | bit
        return True
