"""One derived transport keypair: AEADs, send counter, receive replay window, age."""

from __future__ import annotations

import itertools
import threading

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from engine.wg.constants import Timings
from engine.wg.replay import ReplayFilter


class Keypair:
    """Transport keys of one session (whitepaper §5.4.5), with counters and replay state.

    ``send_counter`` is an ``itertools.count``: ``next()`` is atomic in CPython, so several
    sender threads never reuse a nonce. ``recv_lock`` serialises the replay window.
    """

    __slots__ = (
        "send_aead", "recv_aead", "local_index", "remote_index", "created", "is_initiator",
        "peer", "send_counter", "replay", "recv_lock", "__weakref__",
    )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        *,
        local_index: int,
        remote_index: int,
        created: float,
        is_initiator: bool,
        peer: object = None,
    ) -> None:
        self.send_aead = ChaCha20Poly1305(send_key)  # reused per packet: no per-call key setup
        self.recv_aead = ChaCha20Poly1305(recv_key)
        self.local_index = local_index  # our index: the receiver field of packets sent to us
        self.remote_index = remote_index  # theirs: the receiver field of packets we send
        self.created = created  # monotonic ``now`` at derivation
        self.is_initiator = is_initiator
        self.peer = peer
        self.send_counter = itertools.count()
        self.replay = ReplayFilter()
        self.recv_lock = threading.Lock()

    # The core inlines these checks on its hot paths; these methods state them once.
    def next_send_counter(self, now: float, timings: Timings) -> tuple[int, bool] | None:
        """(counter, rekey_due) for the next packet, or None if this keypair must not send
        (older than REJECT_AFTER_TIME, or the counter reached REJECT_AFTER_MESSAGES)."""
        if now - self.created >= timings.reject_after_time:
            return None
        n = next(self.send_counter)
        if n >= timings.reject_after_messages:
            return None
        rekey = n >= timings.rekey_after_messages or (
            self.is_initiator and now - self.created > timings.rekey_after_time)
        return n, rekey

    def receive_allowed(self, counter: int, now: float, timings: Timings) -> bool:
        """Pre-decryption checks: keypair younger than REJECT_AFTER_TIME, counter below the limit."""
        return now - self.created < timings.reject_after_time and counter < timings.reject_after_messages

    def accept_counter(self, counter: int, timings: Timings) -> bool:
        """Post-decryption replay check (marks the counter seen); thread-safe."""
        with self.recv_lock:
            return self.replay.validate(counter, timings.reject_after_messages)

    def exhaust(self, limit: int) -> None:
        """Make every later send counter ≥ ``limit`` (used when the keypair is retired)."""
        self.send_counter = itertools.count(limit)

    def __repr__(self) -> str:
        role = "initiator" if self.is_initiator else "responder"
        return f"Keypair(local={self.local_index:#010x}, remote={self.remote_index:#010x}, {role})"
