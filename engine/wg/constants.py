"""WireGuard protocol constants (whitepaper §5-§6) and the overridable Timings used by the cores."""

from __future__ import annotations

import dataclasses

# --- Noise / handshake identifiers (whitepaper §5.4) ---------------------------------------
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"  # §5.4: protocol name hashed into C_i
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"  # §5.4: mixed into H_i (Noise prologue)
LABEL_MAC1 = b"mac1----"  # §5.4.4: mac1 key = HASH(LABEL_MAC1 || S_pub of the receiver)
LABEL_COOKIE = b"cookie--"  # §5.4.7: cookie-reply key = HASH(LABEL_COOKIE || S_pub of the sender)

# --- Message-count limits (whitepaper §6.1 table of constants; used as in §6.2) -------------
REKEY_AFTER_MESSAGES = 1 << 60  # §6.2: initiate a new handshake after this many sent messages
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1  # §6.2: never send/accept a counter >= this

# --- Times in seconds (whitepaper §6.1, same table) -----------------------------------------
REKEY_AFTER_TIME = 120.0  # §6.2/§6.3: the initiator rekeys a session older than this on send
REJECT_AFTER_TIME = 180.0  # §6.2: a keypair older than this is never used (send or receive);
#                            §6.3: all keys are erased after 3 x REJECT_AFTER_TIME without a session
REKEY_ATTEMPT_TIME = 90.0  # §6.4: keep retrying a handshake for this long, then give up
REKEY_TIMEOUT = 5.0  # §6.4: retransmit an unanswered initiation after this (+ jitter)
KEEPALIVE_TIMEOUT = 10.0  # §6.5: passive keepalive after receiving data and sending nothing
REKEY_TIMEOUT_JITTER_MAX = 0.334  # §6.4: retries add up to 333 ms of jitter; wireguard-go
#                                   RekeyTimeoutJitterMaxMs draws an integer in [0, 334) ms
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # = 18 retries (wireguard-go)

# --- Cookies and DoS mitigation (whitepaper §5.3, §5.4.7) ----------------------------------
COOKIE_REFRESH_TIME = 120.0  # §5.4.7: responder's cookie secret R_m changes every 2 minutes;
#                              the initiator stops using a cookie older than this
HANDSHAKE_INITIATION_RATE = 1.0 / 50  # wireguard-go HandshakeInitationRate, kernel
#   INITIATIONS_PER_SECOND = 50: an initiation < 20 ms after the last accepted one from that
#   peer is dropped (flood guard beside the TAI64N replay check of §5.1/§5.4.2)
UNDER_LOAD_AFTER_TIME = 1.0  # wireguard-go device.go: stay "under load" for 1 s once detected
RATE_LIMIT_PACKETS_PER_SECOND = 20  # wireguard-go ratelimiter: handshakes/s per source IP
RATE_LIMIT_BURST = 5  # wireguard-go ratelimiter: burst per source IP
RATE_LIMIT_GC_AGE = 1.0  # ratelimiter entries idle this long are forgotten

# --- Sizes ----------------------------------------------------------------------------------
PADDING_MULTIPLE = 16  # §5.4.6: plaintext is zero-padded to a multiple of 16 bytes
REPLAY_WINDOW_BLOCKS = 128  # ring of 128 x 64-bit blocks (RFC 6479); 8192 bits in total
REPLAY_WINDOW_SIZE = (REPLAY_WINDOW_BLOCKS - 1) * 64  # 8128 usable bits (Linux/wireguard-go)
MAX_STAGED_PACKETS = 128  # wireguard-go QueueStagedSize: packets held while no session exists


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """Protocol timing and counter limits, injected into every core (tests shorten them)."""

    rekey_after_time: float = REKEY_AFTER_TIME
    reject_after_time: float = REJECT_AFTER_TIME
    rekey_attempt_time: float = REKEY_ATTEMPT_TIME
    rekey_timeout: float = REKEY_TIMEOUT
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    rekey_timeout_jitter_max: float = REKEY_TIMEOUT_JITTER_MAX
    cookie_refresh_time: float = COOKIE_REFRESH_TIME
    handshake_initiation_rate: float = HANDSHAKE_INITIATION_RATE
    rekey_after_messages: int = REKEY_AFTER_MESSAGES
    reject_after_messages: int = REJECT_AFTER_MESSAGES

    @property
    def max_timer_handshakes(self) -> int:
        """Retries of an unanswered initiation before giving up (90 / 5 = 18 by default)."""
        return int(self.rekey_attempt_time / self.rekey_timeout)

    @property
    def zero_keys_after(self) -> float:
        """Erase all keys after 3 x REJECT_AFTER_TIME without a new session (§6.3)."""
        return 3 * self.reject_after_time

    @property
    def last_minute_rekey_age(self) -> float:
        """On receive, the initiator rekeys a keypair older than REJECT - KEEPALIVE - REKEY_TIMEOUT."""
        return self.reject_after_time - self.keepalive_timeout - self.rekey_timeout


DEFAULT_TIMINGS = Timings()
