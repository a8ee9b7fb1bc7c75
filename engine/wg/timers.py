"""Per-peer WireGuard timer state machine as pure data (whitepaper §6; wireguard-go timers.go).

Five timers, each a deadline (``None`` = not pending)::

    retransmit_handshake  armed when an initiation is sent (REKEY_TIMEOUT + jitter);
                          fires: retry (up to MAX_TIMER_HANDSHAKES), then GIVE_UP
    send_keepalive        armed when data is received (KEEPALIVE_TIMEOUT); cancelled by
                          any authenticated packet we send; fires: SEND_KEEPALIVE
    new_handshake         armed when data is sent (KEEPALIVE + REKEY_TIMEOUT + jitter);
                          cancelled by any authenticated packet received; fires: a handshake
    zero_key_material     armed when a session is derived (3 x REJECT_AFTER_TIME);
                          fires: ZERO_KEYS
    persistent_keepalive  re-armed on every authenticated packet in either direction
                          (interval); fires: SEND_KEEPALIVE

Hooks (``data_sent`` ...) are called by the core at the same points as wireguard-go calls
``timersDataSent`` etc.; each is a couple of attribute stores (safe on the hot path).
``handle_timer(now)`` fires the due timers and returns the actions for the core to do.
"""

from __future__ import annotations

import enum
import random

from engine.wg.constants import DEFAULT_TIMINGS, Timings


class Action(enum.Enum):
    SEND_HANDSHAKE_INITIATION = "send_handshake_initiation"
    SEND_KEEPALIVE = "send_keepalive"
    ZERO_KEYS = "zero_keys"
    GIVE_UP = "give_up"  # drop the packets staged for this peer


class PeerTimers:
    """Timer deadlines and counters of one peer; all times are the caller's monotonic ``now``."""

    __slots__ = (
        "timings",
        "_rng",
        "persistent_keepalive_interval",
        "retransmit_handshake",
        "send_keepalive",
        "new_handshake",
        "zero_key_material",
        "persistent_keepalive",
        "handshake_attempts",
        "need_another_keepalive",
        "sent_last_minute_handshake",
        "last_sent_handshake",
        "last_handshake_completed",
    )

    def __init__(
        self,
        timings: Timings = DEFAULT_TIMINGS,
        rng: random.Random | None = None,
        persistent_keepalive_interval: float = 0.0,
    ) -> None:
        self.timings = timings
        self._rng = rng if rng is not None else random.Random()
        self.persistent_keepalive_interval = persistent_keepalive_interval
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False
        self.last_sent_handshake: float | None = None
        self.last_handshake_completed: float | None = None  # monotonic

    def _jitter(self) -> float:
        # wireguard-go: fastrandn(334) ms, i.e. an integer in [0, 333]
        return int(self._rng.random() * self.timings.rekey_timeout_jitter_max * 1000) / 1000.0

    # --- hooks (names follow wireguard-go's timers*) ---------------------------------------
    def data_sent(self, now: float) -> None:
        """After an authenticated data packet is sent."""
        if self.new_handshake is None:
            t = self.timings
            self.new_handshake = now + t.keepalive_timeout + t.rekey_timeout + self._jitter()

    def data_received(self, now: float) -> None:
        """After an authenticated data packet is received."""
        if self.send_keepalive is None:
            self.send_keepalive = now + self.timings.keepalive_timeout
        else:
            self.need_another_keepalive = True

    def any_authenticated_packet_sent(self, now: float) -> None:
        """After any authenticated packet (keepalive, data or handshake) is sent."""
        self.send_keepalive = None

    def any_authenticated_packet_received(self, now: float) -> None:
        """After any authenticated packet (keepalive, data or handshake) is received."""
        self.new_handshake = None

    def any_authenticated_packet_traversal(self, now: float) -> None:
        """Before sending or after receiving any authenticated packet."""
        if self.persistent_keepalive_interval > 0:
            self.persistent_keepalive = now + self.persistent_keepalive_interval

    def handshake_initiated(self, now: float) -> None:
        """After a handshake initiation is sent."""
        self.retransmit_handshake = now + self.timings.rekey_timeout + self._jitter()

    def handshake_complete(self, now: float) -> None:
        """After a response is consumed, or the first transport packet under a responder keypair."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False
        self.last_handshake_completed = now

    def session_derived(self, now: float) -> None:
        """After a keypair is derived (before sending a response, after consuming one)."""
        self.zero_key_material = now + self.timings.zero_keys_after

    def persistent_keepalive_tick(self, now: float) -> None:
        """The persistent-keepalive interval changed (or was set): re-arm it from now."""
        if self.persistent_keepalive_interval > 0:
            self.persistent_keepalive = now + self.persistent_keepalive_interval
        else:
            self.persistent_keepalive = None

    # --- handshake send rate limit (wireguard-go SendHandshakeInitiation) ----------------
    def may_send_initiation(self, now: float, *, is_retry: bool) -> bool:
        """Whether to send an initiation now (at most one per REKEY_TIMEOUT); records it if so."""
        if not is_retry:
            self.handshake_attempts = 0
        last = self.last_sent_handshake
        if last is not None and now - last < self.timings.rekey_timeout:
            return False
        self.last_sent_handshake = now
        return True

    def response_sent(self, now: float) -> None:
        """A handshake response was sent (counts for the initiation rate limit)."""
        self.last_sent_handshake = now

    # --- expiry ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        best = None
        for d in (
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def stop(self) -> None:
        self.retransmit_handshake = self.send_keepalive = self.new_handshake = None
        self.zero_key_material = self.persistent_keepalive = None

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` (in wireguard-go's order) and return the actions."""
        actions: list[Action] = []
        t = self.timings
        d = self.retransmit_handshake
        if d is not None and d <= now:
            self.retransmit_handshake = None
            if self.handshake_attempts > t.max_timer_handshakes:
                self.send_keepalive = None
                actions.append(Action.GIVE_UP)
                if self.zero_key_material is None:
                    self.zero_key_material = now + t.zero_keys_after
            else:
                self.handshake_attempts += 1
                actions.append(Action.SEND_HANDSHAKE_INITIATION)
        d = self.send_keepalive
        if d is not None and d <= now:
            self.send_keepalive = None
            actions.append(Action.SEND_KEEPALIVE)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.send_keepalive = now + t.keepalive_timeout
        d = self.new_handshake
        if d is not None and d <= now:
            self.new_handshake = None
            self.handshake_attempts = 0  # a fresh handshake, not a retry
            actions.append(Action.SEND_HANDSHAKE_INITIATION)
        d = self.zero_key_material
        if d is not None and d <= now:
            self.zero_key_material = None
            actions.append(Action.ZERO_KEYS)
        d = self.persistent_keepalive
        if d is not None and d <= now:
            self.persistent_keepalive = None
            if self.persistent_keepalive_interval > 0:
                actions.append(Action.SEND_KEEPALIVE)
        return actions
