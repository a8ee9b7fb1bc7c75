"""A peer's current/previous/next keypairs and their rotation rules (whitepaper §5.4.5, §6.1)."""

from __future__ import annotations

from engine.wg.keypair import Keypair


class KeypairSet:
    """current: used for sending; previous: still accepted on receive; next: a responder's
    fresh keypair, promoted to current only when the first transport packet arrives under it
    (key confirmation, §5.4.5). Mutations are done under the owning peer's lock; readers on
    the hot path load ``current`` with one attribute read.

    Every mutating method returns the keypairs it dropped, so the caller can free their
    indexes.
    """

    __slots__ = ("current", "previous", "next")

    def __init__(self) -> None:
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, kp: Keypair) -> list[Keypair]:
        """Add a freshly derived keypair; an initiator's is current at once (it has key confirmation)."""
        dropped: list[Keypair] = []
        if kp.is_initiator:
            if self.next is not None:
                # an unconfirmed responder keypair becomes previous; the old current goes
                dropped += [k for k in (self.current, self.previous) if k is not None]
                self.previous = self.next
                self.next = None
            else:
                if self.previous is not None:
                    dropped.append(self.previous)
                self.previous = self.current
            self.current = kp
        else:
            dropped += [k for k in (self.next, self.previous) if k is not None]
            self.next = kp
            self.previous = None
        return dropped

    def received_with(self, kp: Keypair) -> tuple[bool, list[Keypair]]:
        """First packet under ``next``: rotate next -> current -> previous. Returns (rotated, dropped)."""
        if self.next is not kp:
            return False, []
        dropped = [self.previous] if self.previous is not None else []
        self.previous = self.current
        self.current = kp
        self.next = None
        return True, dropped

    def clear(self) -> list[Keypair]:
        """Forget every keypair (zero keys); returns them."""
        dropped = [k for k in (self.current, self.previous, self.next) if k is not None]
        self.current = self.previous = self.next = None
        return dropped

    def all(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.next) if k is not None]
