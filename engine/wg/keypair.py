"""One derived transport keypair: AEADs, send counter, receive replay window, age."""

from __future__ import annotations

import itertools
import threading

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from engine.wg.replay import ReplayFilter


class Keypair:
    """Transport keys of one session (whitepaper §5.4.5), with counters and replay state.

    ``send_counter`` is an ``itertools.count``: ``next()`` is atomic in CPython, so several
    sender threads never reuse a nonce. ``recv_lock`` serialises the replay window.
    """

    __slots__ = (
        "send_aead",
        "recv_aead",
        "local_index",
        "remote_index",
        "created",
        "is_initiator",
        "peer",
        "send_counter",
        "replay",
        "recv_lock",
        "__weakref__",
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

    def exhaust(self, limit: int) -> None:
        """Make every later send counter ≥ ``limit`` (used when the keypair is retired)."""
        self.send_counter = itertools.count(limit)

    def __repr__(self) -> str:
        role = "initiator" if self.is_initiator else "responder"
        return f"Keypair(local={self.local_index:#010x}, remote={self.remote_index:#010x}, {role})"
