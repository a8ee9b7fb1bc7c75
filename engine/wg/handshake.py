"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake of WireGuard (whitepaper §5.4.2-§5.4.5).

Flow (initiator i, responder r; tokens in Noise notation)::

    i: create_initiation   -> e, es, s, ss  (+ TAI64N payload)     state INITIATION_CREATED
    r: open_initiation     (es, s: learns i's static key -> finds the peer)
    r: accept_initiation   (ss, timestamp; replay/flood checks)      state INITIATION_CONSUMED
    r: create_response     <- e, ee, se, psk (empty payload)         state RESPONSE_CREATED
    i: consume_response                                              state RESPONSE_CONSUMED
    both: derive_keypair   KDF2(C, ε) -> (send, recv) / (recv, send) state ZEROED

Functions on peer input return a DropReason instead of raising; they commit state only on
success. The caller holds the peer's lock around calls that take a PeerHandshake.
"""

from __future__ import annotations

import enum

from engine.wg import crypto
from engine.wg.constants import CONSTRUCTION, IDENTIFIER, LABEL_COOKIE, LABEL_MAC1
from engine.wg.crypto import AuthenticationError, DHError, PrivateKey, PublicKey
from engine.wg.drops import DropReason
from engine.wg.keypair import Keypair
from engine.wg.messages import Initiation, Response

INITIAL_CHAIN_KEY = crypto.hash_(CONSTRUCTION)  # C_i = HASH(CONSTRUCTION)
INITIAL_HASH = crypto.hash_(INITIAL_CHAIN_KEY, IDENTIFIER)  # H_i = HASH(C_i || IDENTIFIER)
ZERO_PSK = bytes(32)


class HandshakeState(enum.IntEnum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


class HandshakeEvent(enum.Enum):
    CREATE_INITIATION = "create_initiation"
    ACCEPT_INITIATION = "accept_initiation"
    CREATE_RESPONSE = "create_response"
    CONSUME_RESPONSE = "consume_response"
    DERIVE_KEYPAIR = "derive_keypair"
    ZERO = "zero"


_S, _E = HandshakeState, HandshakeEvent
# Every legal (state, event) -> next state; anything else is refused (None / a DropReason)
# and leaves the state unchanged. A new initiation (sent or received) always restarts.
_TRANSITIONS: dict[tuple[HandshakeState, HandshakeEvent], HandshakeState] = {
    **{(s, _E.CREATE_INITIATION): _S.INITIATION_CREATED for s in _S},
    **{(s, _E.ACCEPT_INITIATION): _S.INITIATION_CONSUMED for s in _S},
    **{(s, _E.ZERO): _S.ZEROED for s in _S},
    (_S.INITIATION_CONSUMED, _E.CREATE_RESPONSE): _S.RESPONSE_CREATED,
    (_S.INITIATION_CREATED, _E.CONSUME_RESPONSE): _S.RESPONSE_CONSUMED,
    (_S.RESPONSE_CREATED, _E.DERIVE_KEYPAIR): _S.ZEROED,  # responder: keys, awaiting confirmation
    (_S.RESPONSE_CONSUMED, _E.DERIVE_KEYPAIR): _S.ZEROED,  # initiator: keys, confirmed
}


def next_state(state: HandshakeState, event: HandshakeEvent) -> HandshakeState | None:
    """The state after ``event`` in ``state``, or None if the event is not allowed there."""
    return _TRANSITIONS.get((state, event))


class StaticIdentity:
    """Our static key with the values derived from it once (mac1/cookie keys, initial hash)."""

    __slots__ = ("private", "public", "mac1_key", "cookie_key", "initial_hash")

    def __init__(self, private: PrivateKey) -> None:
        self.private = private
        self.public = private.public()
        self.mac1_key = crypto.hash_(LABEL_MAC1, self.public)  # checks mac1 of messages to us
        self.cookie_key = crypto.hash_(LABEL_COOKIE, self.public)  # encrypts cookies we send
        self.initial_hash = crypto.hash_(INITIAL_HASH, self.public)  # H after "<- s" (we respond)

    def __repr__(self) -> str:
        return f"StaticIdentity({self.public.short()})"


class PeerHandshake:
    """Handshake state for one peer (both roles), plus the replay/flood memory of initiations."""

    __slots__ = (
        "remote_static",
        "preshared_key",
        "precomputed_ss",
        "initial_hash",
        "state",
        "chain_key",
        "hash",
        "local_ephemeral",
        "remote_ephemeral",
        "local_index",
        "remote_index",
        "last_timestamp",
        "last_initiation_consumption",
    )

    def __init__(self, remote_static: bytes, preshared_key: bytes | None = None) -> None:
        self.remote_static = PublicKey(bytes(remote_static))
        self.preshared_key = bytes(preshared_key) if preshared_key else ZERO_PSK
        if len(self.preshared_key) != 32:
            raise ValueError(f"preshared key: want 32 bytes, got {len(self.preshared_key)}")
        self.precomputed_ss: bytes | None = None  # DH(S_local, S_remote); None if low order
        self.initial_hash = crypto.hash_(INITIAL_HASH, self.remote_static)  # H after "<- s"
        self.last_timestamp = bytes(12)
        self.last_initiation_consumption: float | None = None
        self.zero()

    def set_identity(self, ident: StaticIdentity | None) -> None:
        """Recompute DH(S_local, S_remote) for a (new) local key; resets the handshake."""
        self.precomputed_ss = None
        if ident is not None:
            try:
                self.precomputed_ss = ident.private.exchange(self.remote_static)
            except DHError:
                self.precomputed_ss = None
        self.zero()

    def zero(self) -> None:
        self.state = HandshakeState.ZEROED
        self.chain_key = b""
        self.hash = b""
        self.local_ephemeral: PrivateKey | None = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0


def create_initiation(
    ident: StaticIdentity,
    hs: PeerHandshake,
    *,
    sender_index: int,
    wall_time: float,
    ephemeral: PrivateKey,
) -> Initiation | None:
    """Build message 1 (mac1/mac2 left zero: add them with the cookie generator).

    Returns None if the peer's static key is low order (no session possible).
    """
    if hs.precomputed_ss is None:
        return None
    try:
        c = crypto.kdf1(INITIAL_CHAIN_KEY, ephemeral.public())  # e
        h = crypto.hash_(hs.initial_hash, ephemeral.public())
        c, k = crypto.kdf2(c, ephemeral.exchange(hs.remote_static))  # es
    except DHError:
        return None
    enc_static = crypto.aead_encrypt(k, 0, ident.public, h)  # s
    h = crypto.hash_(h, enc_static)
    c, k = crypto.kdf2(c, hs.precomputed_ss)  # ss
    enc_ts = crypto.aead_encrypt(k, 0, crypto.tai64n(wall_time), h)  # payload: TAI64N
    h = crypto.hash_(h, enc_ts)
    hs.state = HandshakeState.INITIATION_CREATED
    hs.chain_key, hs.hash = c, h
    hs.local_ephemeral = ephemeral
    hs.local_index = sender_index
    hs.remote_ephemeral = b""
    return Initiation(sender_index, bytes(ephemeral.public()), enc_static, enc_ts)


class OpenedInitiation:
    """Result of the peer-independent half of consuming an initiation."""

    __slots__ = ("msg", "remote_static", "chain_key", "hash")

    def __init__(self, msg: Initiation, remote_static: bytes, chain_key: bytes, hash_: bytes) -> None:
        self.msg, self.remote_static, self.chain_key, self.hash = msg, remote_static, chain_key, hash_


def open_initiation(ident: StaticIdentity, msg: Initiation) -> OpenedInitiation | DropReason:
    """Responder, part 1: e, es, s -- decrypt the initiator's static key (to find the peer)."""
    c = crypto.kdf1(INITIAL_CHAIN_KEY, msg.ephemeral)
    h = crypto.hash_(ident.initial_hash, msg.ephemeral)
    try:
        c, k = crypto.kdf2(c, ident.private.exchange(msg.ephemeral))
        static = crypto.aead_decrypt(k, 0, msg.encrypted_static, h)
    except DHError:
        return DropReason.BAD_DH
    except AuthenticationError:
        return DropReason.DECRYPT_STATIC
    h = crypto.hash_(h, msg.encrypted_static)
    return OpenedInitiation(msg, static, c, h)


def accept_initiation(
    opened: OpenedInitiation, hs: PeerHandshake, *, now: float, initiation_rate: float
) -> DropReason | None:
    """Responder, part 2 (peer lock held): ss, timestamp; reject replays and floods."""
    if hs.precomputed_ss is None:
        return DropReason.BAD_DH
    msg = opened.msg
    c, k = crypto.kdf2(opened.chain_key, hs.precomputed_ss)  # ss
    try:
        ts = crypto.aead_decrypt(k, 0, msg.encrypted_timestamp, opened.hash)
    except AuthenticationError:
        return DropReason.DECRYPT_TIMESTAMP
    h = crypto.hash_(opened.hash, msg.encrypted_timestamp)
    if ts <= hs.last_timestamp:  # TAI64N compares as big-endian bytes
        return DropReason.REPLAYED_TIMESTAMP
    last = hs.last_initiation_consumption
    if last is not None and now - last <= initiation_rate:
        return DropReason.INITIATION_FLOOD
    hs.chain_key, hs.hash = c, h
    hs.remote_index = msg.sender
    hs.remote_ephemeral = msg.ephemeral
    hs.last_timestamp = ts
    if last is None or now > last:
        hs.last_initiation_consumption = now
    hs.local_ephemeral = None
    hs.state = HandshakeState.INITIATION_CONSUMED
    return None


def create_response(hs: PeerHandshake, *, sender_index: int, ephemeral: PrivateKey) -> Response | None:
    """Build message 2 (responder; mac fields left zero). None unless an initiation was consumed."""
    if next_state(hs.state, HandshakeEvent.CREATE_RESPONSE) is None:
        return None
    try:
        c = crypto.kdf1(hs.chain_key, ephemeral.public())  # e
        h = crypto.hash_(hs.hash, ephemeral.public())
        c = crypto.kdf1(c, ephemeral.exchange(hs.remote_ephemeral))  # ee
        c = crypto.kdf1(c, ephemeral.exchange(hs.remote_static))  # se
    except DHError:
        return None
    c, tau, k = crypto.kdf3(c, hs.preshared_key)  # psk
    h = crypto.hash_(h, tau)
    enc_nothing = crypto.aead_encrypt(k, 0, b"", h)
    h = crypto.hash_(h, enc_nothing)
    hs.chain_key, hs.hash = c, h
    hs.local_ephemeral = ephemeral
    hs.local_index = sender_index
    hs.state = HandshakeState.RESPONSE_CREATED
    return Response(sender_index, hs.remote_index, bytes(ephemeral.public()), enc_nothing)


def consume_response(ident: StaticIdentity, msg: Response, hs: PeerHandshake) -> DropReason | None:
    """Initiator (peer lock held): e, ee, se, psk; commits only if the empty payload verifies."""
    if next_state(hs.state, HandshakeEvent.CONSUME_RESPONSE) is None or msg.receiver != hs.local_index:
        return DropReason.UNEXPECTED_RESPONSE
    eph = hs.local_ephemeral
    if eph is None:
        return DropReason.UNEXPECTED_RESPONSE
    try:
        c = crypto.kdf1(hs.chain_key, msg.ephemeral)  # e
        h = crypto.hash_(hs.hash, msg.ephemeral)
        c = crypto.kdf1(c, eph.exchange(msg.ephemeral))  # ee
        c = crypto.kdf1(c, ident.private.exchange(msg.ephemeral))  # se
    except DHError:
        return DropReason.BAD_DH
    c, tau, k = crypto.kdf3(c, hs.preshared_key)  # psk
    h = crypto.hash_(h, tau)
    try:
        crypto.aead_decrypt(k, 0, msg.encrypted_nothing, h)
    except AuthenticationError:
        return DropReason.DECRYPT_RESPONSE
    h = crypto.hash_(h, msg.encrypted_nothing)
    hs.chain_key, hs.hash = c, h
    hs.remote_index = msg.sender
    hs.local_ephemeral = None
    hs.state = HandshakeState.RESPONSE_CONSUMED
    return None


def derive_keypair(hs: PeerHandshake, *, now: float, peer: object = None) -> Keypair | None:
    """Split (§5.4.5): both sides derive transport keys, and the handshake is zeroed."""
    if next_state(hs.state, HandshakeEvent.DERIVE_KEYPAIR) is None:
        return None
    if hs.state == HandshakeState.RESPONSE_CONSUMED:
        send, recv = crypto.kdf2(hs.chain_key, b"")
        initiator = True
    else:
        recv, send = crypto.kdf2(hs.chain_key, b"")
        initiator = False
    kp = Keypair(
        send,
        recv,
        local_index=hs.local_index,
        remote_index=hs.remote_index,
        created=now,
        is_initiator=initiator,
        peer=peer,
    )
    hs.zero()
    return kp
