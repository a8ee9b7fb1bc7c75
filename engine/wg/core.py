"""DeviceCore: the WireGuard device as a sans-IO object (peers, index table, send/receive, timers).

Receive flow (``decrypt``)::

    type 4 -> index table -> keypair -> age/counter limits -> AEAD open -> replay window
           -> (first packet under a responder's next keypair: rotate, flush staged)
           -> timers -> keepalive? -> trim to the inner IP length -> source in allowed-ips?
    type 1/2 -> mac1 -> (under load: mac2 or cookie reply; rate limit) -> Noise -> outbox
    type 3 -> index table -> peer's cookie generator

Send flow (``encrypt``): current keypair valid? -> next counter -> (rekey due? initiate)
-> pad to 16 -> AEAD seal -> header; otherwise stage the packet and initiate a handshake.

See ``engine/wg/__init__.py`` for the API and the threading rules.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import secrets
import struct
import threading
from typing import Any, Callable, Iterable, Mapping

from cryptography.exceptions import InvalidTag

from engine.wg import handshake as hsm
from engine.wg.allowedips import AllowedIPs
from engine.wg.constants import DEFAULT_TIMINGS, MAX_STAGED_PACKETS, UNDER_LOAD_AFTER_TIME, Timings
from engine.wg.cookie import CookieChecker, CookieGenerator, RateLimiter
from engine.wg.crypto import PrivateKey, PublicKey
from engine.wg.drops import DropReason
from engine.wg.handshake import PeerHandshake, StaticIdentity
from engine.wg.keypair import Keypair
from engine.wg.messages import (
    SIZE_INITIATION,
    SIZE_KEEPALIVE,
    SIZE_RESPONSE,
    SIZE_TRANSPORT_HEADER,
    TRANSPORT_HEADER,
    TYPE_TRANSPORT,
    CookieReply,
    Initiation,
    MessageParseError,
    Response,
    parse as parse_message,
)
from engine.wg.session import KeypairSet
from engine.wg.timers import Action, PeerTimers

__all__ = ["DeviceCore", "Peer", "Outgoing", "DropReason", "Timings"]

_HEADER_PACK = TRANSPORT_HEADER.pack
_HEADER_UNPACK = TRANSPORT_HEADER.unpack_from
_NONCE_PACK = struct.Struct("<4xQ").pack
_NONCE_PREFIX = bytes(4)
_ZEROS = [bytes(i) for i in range(16)]
_TRANSPORT_WORD = bytes([TYPE_TRANSPORT, 0, 0, 0])
_from_bytes = int.from_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A datagram for the adapter to send: to ``addr`` (the peer's endpoint when queued)."""

    peer: "Peer | None"  # None for cookie replies
    addr: Any
    data: bytes


class Peer:
    """One configured peer: handshake, keypairs, timers, cookie state, staged packets, stats."""

    __slots__ = (
        "public_key",
        "handshake",
        "keypairs",
        "timers",
        "cookie_gen",
        "lock",
        "endpoint",
        "staged",
        "rx_bytes",
        "tx_bytes",
        "last_handshake",
        "removed",
        "__weakref__",
    )

    def __init__(
        self, public_key: PublicKey, preshared_key: bytes | None, timers: PeerTimers, cookie_refresh: float
    ) -> None:
        self.public_key = public_key
        self.handshake = PeerHandshake(public_key, preshared_key)
        self.keypairs = KeypairSet()
        self.timers = timers
        self.cookie_gen = CookieGenerator(public_key, refresh_time=cookie_refresh)
        self.lock = threading.RLock()  # handshake, rotation, staging, timer expiry
        self.endpoint: Any = None
        self.staged: collections.deque[bytes] = collections.deque(maxlen=MAX_STAGED_PACKETS)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake: float | None = None  # wall-clock time of the last completed handshake
        self.removed = False

    @property
    def persistent_keepalive(self) -> float:
        return self.timers.persistent_keepalive_interval

    @property
    def preshared_key(self) -> bytes | None:
        psk = self.handshake.preshared_key
        return None if psk == hsm.ZERO_PSK else psk

    def __repr__(self) -> str:
        return f"Peer({self.public_key.short()})"


class DeviceCore:
    """All WireGuard protocol state of one device; see the module and package docstrings."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        wall_clock: Callable[[], float],
        timings: Timings = DEFAULT_TIMINGS,
        mtu: int = 1420,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        rng: random.Random | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        on_outgoing: Callable[[], None] | None = None,
    ) -> None:
        self.timings = timings
        self.mtu = mtu
        self._wall_clock = wall_clock
        self._random_bytes = random_bytes
        self._rng = rng if rng is not None else random.Random(random_bytes(16))
        self._log = logger  # debug logs on slow paths only; None = silent
        self._on_outgoing = on_outgoing
        self._lock = threading.RLock()  # configuration (peers, key, allowed-ips)
        self._peers: dict[bytes, Peer] = {}
        self._index: dict[int, Keypair | Peer] = {}  # our 32-bit indexes -> keypair / peer mid-handshake
        self.allowed_ips = AllowedIPs()
        self._outbox: collections.deque[Outgoing] = collections.deque()
        self._identity: StaticIdentity | None = None
        self._checker: CookieChecker | None = None
        self._cookie_lock = threading.Lock()
        self._limiter = RateLimiter()
        self._under_load_until = float("-inf")
        self._counters: dict[str, int] = collections.defaultdict(int)
        # hot-path copies of the timings
        self._reject_time = timings.reject_after_time
        self._rekey_time = timings.rekey_after_time
        self._rekey_msgs = timings.rekey_after_messages
        self._reject_msgs = timings.reject_after_messages
        self._last_minute_age = timings.last_minute_rekey_age
        if private_key is not None:
            self.set_private_key(private_key, now=0.0)

    # ------------------------------------------------------------------ configuration
    @property
    def public_key(self) -> PublicKey | None:
        return self._identity.public if self._identity is not None else None

    def set_private_key(self, private_key: bytes | None, now: float = 0.0) -> None:
        """Set (or clear, with None) the static key; every session and handshake is dropped."""
        with self._lock:
            if private_key is None:
                ident = None
            else:
                ident = StaticIdentity(PrivateKey(bytes(private_key)))
            if ident is not None and self._identity is not None and ident.private == self._identity.private:
                return
            self._identity = ident
            self._checker = (
                CookieChecker(ident.public, self._random_bytes, refresh_time=self.timings.cookie_refresh_time)
                if ident
                else None
            )
            if ident is not None and ident.public in self._peers:  # never a peer of ourselves
                self._remove_peer_locked(self._peers[ident.public])
            for peer in self._peers.values():
                with peer.lock:
                    self._zero_and_flush_locked(peer)
                    peer.handshake.set_identity(ident)
                    if ident is not None and peer.timers.persistent_keepalive_interval > 0:
                        self._send_keepalive_locked(peer, now)  # as wireguard-go does on device up

    def add_peer(
        self,
        public_key: bytes,
        *,
        preshared_key: bytes | None = None,
        persistent_keepalive: float = 0,
        endpoint: Any = None,
        allowed_ips: Iterable[object] = (),
        now: float = 0.0,
    ) -> Peer:
        """Add a peer (ValueError if it exists, or is ourselves)."""
        pub = PublicKey(bytes(public_key))
        with self._lock:
            if pub in self._peers:
                raise ValueError(f"peer {pub.short()} already exists")
            if self._identity is not None and pub == self._identity.public:
                raise ValueError("a peer cannot have the device's own public key")
            timers = PeerTimers(self.timings, self._rng, 0.0)
            peer = Peer(pub, preshared_key, timers, self.timings.cookie_refresh_time)
            peer.handshake.set_identity(self._identity)
            peer.endpoint = endpoint
            self._peers[pub] = peer
            for net in allowed_ips:
                self.allowed_ips.insert(net, peer)
        if persistent_keepalive:
            self.update_peer(peer, persistent_keepalive=persistent_keepalive, now=now)
        return peer

    _UNSET: Any = object()

    def update_peer(
        self,
        peer: Peer,
        *,
        preshared_key: Any = _UNSET,
        persistent_keepalive: Any = _UNSET,
        endpoint: Any = _UNSET,
        now: float = 0.0,
    ) -> None:
        """Change a peer's psk / persistent keepalive (turning it on sends a keepalive) / endpoint."""
        with peer.lock:
            if preshared_key is not self._UNSET:
                psk = bytes(preshared_key) if preshared_key else hsm.ZERO_PSK
                if len(psk) != 32:
                    raise ValueError(f"preshared key: want 32 bytes, got {len(psk)}")
                peer.handshake.preshared_key = psk
            if endpoint is not self._UNSET:
                peer.endpoint = endpoint
            if persistent_keepalive is not self._UNSET:
                interval = float(persistent_keepalive or 0)
                was = peer.timers.persistent_keepalive_interval
                peer.timers.persistent_keepalive_interval = interval
                peer.timers.persistent_keepalive_tick(now)
                if interval > 0 and was == 0 and self._identity is not None and not peer.removed:
                    self._send_keepalive_locked(peer, now)

    def set_endpoint(self, peer: Peer, addr: Any) -> None:
        peer.endpoint = addr

    def remove_peer(self, public_key: bytes) -> bool:
        with self._lock:
            peer = self._peers.get(PublicKey(bytes(public_key)))
            if peer is None:
                return False
            self._remove_peer_locked(peer)
            return True

    def _remove_peer_locked(self, peer: Peer) -> None:
        del self._peers[peer.public_key]
        self.allowed_ips.remove_by_peer(peer)
        with peer.lock:
            peer.removed = True
            self._zero_and_flush_locked(peer)
            peer.timers.stop()

    def remove_all_peers(self) -> None:
        with self._lock:
            for peer in list(self._peers.values()):
                self._remove_peer_locked(peer)

    def peer(self, public_key: bytes) -> Peer | None:
        return self._peers.get(bytes(public_key))

    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    def set_allowed_ips(self, peer: Peer, prefixes: Iterable[object]) -> None:
        with self._lock:
            self.allowed_ips.remove_by_peer(peer)
            for net in prefixes:
                self.allowed_ips.insert(net, peer)

    def add_allowed_ip(self, peer: Peer, prefix: object) -> None:
        with self._lock:
            self.allowed_ips.insert(prefix, peer)

    @property
    def index_table(self) -> Mapping[int, Keypair | Peer]:
        """Our receiver indexes -> Keypair (sessions) or Peer (handshake in flight).

        Live and read-only (typed as a Mapping; it is the table itself, not a copy or a
        MappingProxyType, because that costs ~2% of the data plane's receive path): a batch
        fast path may keep it and ``get()`` from it without a lock. Never mutate it.
        """
        return self._index

    def keypair_for_index(self, index: int) -> Keypair | None:
        """The session keypair our receiver ``index`` names (None: unknown, or a handshake)."""
        kp = self._index.get(index)
        return kp if kp.__class__ is Keypair else None

    def set_under_load(self, now: float, duration: float = UNDER_LOAD_AFTER_TIME) -> None:
        """Demand mac2 cookies on handshakes (and rate-limit them) until now + duration."""
        self._under_load_until = max(self._under_load_until, now + duration)

    def counters(self) -> dict[str, int]:
        """Drops by reason as ``drop_<reason>``, plus other event counts."""
        return {
            (f"drop_{k}" if k in DropReason.__members__.values() else k): v for k, v in list(self._counters.items())
        }

    # ------------------------------------------------------------------ outbox
    @property
    def has_outgoing(self) -> bool:
        return bool(self._outbox)

    def datagrams_to_send(self) -> list[Outgoing]:
        """Drain the queued handshake messages, keepalives, cookie replies and flushed packets."""
        out = []
        pop = self._outbox.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            return out

    def _push(self, peer: Peer | None, addr: Any, data: bytes) -> None:
        self._outbox.append(Outgoing(peer, addr, data))
        if self._on_outgoing is not None:
            self._on_outgoing()

    def _new_index(self, entry: Keypair | Peer) -> int:
        idx = self._index
        while True:
            i = _from_bytes(self._random_bytes(4), "little")
            if i and idx.setdefault(i, entry) is entry:
                return i

    def _free_index(self, i: int, entry: object) -> None:
        if i and self._index.get(i) is entry:
            self._index.pop(i, None)

    # ------------------------------------------------------------------ send path
    def route(self, packet: bytes) -> Peer | None:
        """The peer whose allowed-ips hold the packet's destination (None: drop)."""
        return self.allowed_ips.lookup_packet_dst(packet)

    def encrypt(self, peer: Peer, packet: bytes, now: float) -> bytes | None:
        """Seal an IP packet (b"" = keepalive) for ``peer``; None if staged pending a handshake."""
        kp = peer.keypairs.current
        if kp is None or now - kp.created >= self._reject_time:
            self._stage(peer, packet, now)
            return None
        n = next(kp.send_counter)
        if n >= self._rekey_msgs:
            if n >= self._reject_msgs:
                self._stage(peer, packet, now)
                return None
            self._want_handshake(peer, now)
        elif kp.is_initiator and now - kp.created > self._rekey_time:
            self._want_handshake(peer, now)
        data = self._seal(peer, kp, n, packet, now)
        return data

    def _seal(self, peer: Peer, kp: Keypair, n: int, packet: bytes, now: float) -> bytes:
        length = len(packet)
        r = length & 15
        if r:
            pad = 16 - r
            if length + pad > self.mtu:
                pad = self.mtu - length if self.mtu > length else 0
            if pad:
                packet = packet + _ZEROS[pad]
        out = _HEADER_PACK(TYPE_TRANSPORT, kp.remote_index, n) + kp.send_aead.encrypt(_NONCE_PACK(n), packet, None)
        self.note_sent(peer, len(out), length > 0, now)
        return out

    def note_sent(self, peer: Peer, nbytes: int, data: bool, now: float) -> None:
        """Bookkeeping after transport messages (``nbytes`` in all) were sealed for ``peer``.

        ``data``: at least one carried a packet (not only keepalives). Re-arms the persistent
        keepalive, cancels the passive keepalive, arms new-handshake on data, counts tx bytes.
        ``encrypt`` calls it per packet; a batching data plane once per peer per batch (as
        wireguard-go's sequential sender does).
        """
        t = peer.timers
        t.any_authenticated_packet_traversal(now)
        t.any_authenticated_packet_sent(now)
        if data:
            t.data_sent(now)
        peer.tx_bytes += nbytes

    def _want_handshake(self, peer: Peer, now: float) -> None:
        last = peer.timers.last_sent_handshake
        if last is not None and now - last < self.timings.rekey_timeout:
            return
        with peer.lock:
            self._send_initiation_locked(peer, now, is_retry=False)

    def _stage(self, peer: Peer, packet: bytes, now: float) -> None:
        with peer.lock:
            if peer.removed:
                return
            peer.staged.append(packet)
            self._send_staged_locked(peer, now)

    def _send_staged_locked(self, peer: Peer, now: float) -> None:
        staged = peer.staged
        while staged:
            kp = peer.keypairs.current
            if kp is None or now - kp.created >= self._reject_time:
                self._send_initiation_locked(peer, now, is_retry=False)
                return
            n = next(kp.send_counter)
            if n >= self._reject_msgs:
                self._send_initiation_locked(peer, now, is_retry=False)
                return
            packet = staged.popleft()
            self._push(peer, peer.endpoint, self._seal(peer, kp, n, packet, now))

    def _send_keepalive_locked(self, peer: Peer, now: float) -> None:
        if not peer.staged:
            peer.staged.append(b"")
        self._send_staged_locked(peer, now)

    def _send_initiation_locked(self, peer: Peer, now: float, *, is_retry: bool) -> None:
        ident = self._identity
        if ident is None or peer.removed:
            return
        t = peer.timers
        if not t.may_send_initiation(now, is_retry=is_retry):
            return
        hs = peer.handshake
        self._free_index(hs.local_index, peer)
        idx = self._new_index(peer)
        eph = PrivateKey(self._random_bytes(32))
        msg = hsm.create_initiation(ident, hs, sender_index=idx, wall_time=self._wall_clock(), ephemeral=eph)
        if msg is None:
            self._free_index(idx, peer)
            return
        data = peer.cookie_gen.add_macs(msg.marshal(), now)
        t.any_authenticated_packet_traversal(now)
        t.any_authenticated_packet_sent(now)
        self._counters["handshake_initiations_sent"] += 1
        if self._log is not None:
            self._log.debug("%s: sending handshake initiation (retry=%s)", peer, is_retry)
        peer.tx_bytes += len(data)
        self._push(peer, peer.endpoint, data)
        t.handshake_initiated(now)

    # ------------------------------------------------------------------ receive path
    def _drop(self, reason: DropReason) -> DropReason:
        self._counters[reason] += 1
        return reason

    def _drop_logged(self, reason: DropReason, src: Any) -> DropReason:
        self._counters[reason] += 1
        if self._log is not None:
            self._log.debug("dropped handshake message from %s: %s", src, reason.value)
        return reason

    def decrypt(self, datagram: bytes, src: Any, now: float) -> tuple[Peer, bytes] | DropReason | None:
        """Process one received datagram; see the package docstring for the three outcomes."""
        if len(datagram) >= SIZE_KEEPALIVE and datagram[0:4] == _TRANSPORT_WORD:
            _, receiver, counter = _HEADER_UNPACK(datagram)
            kp = self._index.get(receiver)
            if kp.__class__ is not Keypair:
                return self._drop(DropReason.UNKNOWN_INDEX)
            if now - kp.created >= self._reject_time:
                return self._drop(DropReason.KEYPAIR_EXPIRED)
            if counter >= self._reject_msgs:
                return self._drop(DropReason.COUNTER_LIMIT)
            try:
                pt = kp.recv_aead.decrypt(_NONCE_PREFIX + datagram[8:16], datagram[SIZE_TRANSPORT_HEADER:], None)
            except InvalidTag:
                return self._drop(DropReason.DECRYPT_TRANSPORT)
            with kp.recv_lock:
                fresh = kp.replay.validate(counter, self._reject_msgs)
            if not fresh:
                return self._drop(DropReason.REPLAY)
            peer: Peer = kp.peer
            if peer.keypairs.next is kp:
                self._received_with_next(peer, kp, now)
            n = len(pt)
            self.note_received(peer, len(datagram), src, n > 0, now)
            if not n:
                return None  # keepalive
            length = self.inner_packet_length(pt, 0, n, peer)
            if length.__class__ is not int:
                return self._drop(length)  # type: ignore[arg-type]
            return peer, (pt if length == n else pt[:length])
        return self._receive_handshake(datagram, src, now)

    def note_received(self, peer: Peer, nbytes: int, src: Any, data: bool, now: float) -> None:
        """Bookkeeping after transport messages from ``peer`` passed the replay window.

        ``nbytes``: their datagram bytes in all; ``src``: the source of the latest one (the
        peer roams there); ``data``: at least one was not a keepalive. Starts the last-minute
        rekey of an initiator session, re-arms the persistent keepalive, cancels new-handshake,
        arms the passive keepalive on data, counts rx bytes. ``decrypt`` calls it per packet; a
        batching data plane once per peer per batch (as wireguard-go's sequential receiver does).
        """
        t = peer.timers
        cur = peer.keypairs.current  # keepKeyFreshReceiving looks at the current keypair
        if (
            cur is not None
            and cur.is_initiator
            and not t.sent_last_minute_handshake
            and now - cur.created > self._last_minute_age
        ):
            with peer.lock:
                if not t.sent_last_minute_handshake:
                    t.sent_last_minute_handshake = True
                    self._send_initiation_locked(peer, now, is_retry=False)
        t.any_authenticated_packet_traversal(now)
        t.any_authenticated_packet_received(now)
        peer.endpoint = src
        peer.rx_bytes += nbytes
        if data:
            t.data_received(now)

    def inner_packet_length(self, buf: bytes | bytearray, off: int, n: int, peer: Peer) -> int | DropReason:
        """Check the decrypted IP packet at ``buf[off:off + n]`` (n > 0) that came from ``peer``.

        Returns its length from the IP header (the rest is padding), or why to drop it (not yet
        counted): not IPv4/IPv6 or a lying length (BAD_INNER_PACKET), or a source address
        outside ``peer``'s allowed-ips (DISALLOWED_SOURCE).
        """
        v = buf[off] >> 4
        if v == 4:
            if n < 20:
                return DropReason.BAD_INNER_PACKET
            length = (buf[off + 2] << 8) | buf[off + 3]
            if length > n or length < 20:
                return DropReason.BAD_INNER_PACKET
            if self.allowed_ips.lookup_v4(_from_bytes(buf[off + 12 : off + 16], "big")) is not peer:
                return DropReason.DISALLOWED_SOURCE
            return length
        if v == 6:
            if n < 40:
                return DropReason.BAD_INNER_PACKET
            length = ((buf[off + 4] << 8) | buf[off + 5]) + 40
            if length > n:
                return DropReason.BAD_INNER_PACKET
            if self.allowed_ips.lookup_v6(_from_bytes(buf[off + 8 : off + 24], "big")) is not peer:
                return DropReason.DISALLOWED_SOURCE
            return length
        return DropReason.BAD_INNER_PACKET

    def _received_with_next(self, peer: Peer, kp: Keypair, now: float) -> None:
        with peer.lock:
            rotated, dropped = peer.keypairs.received_with(kp)
            if not rotated:
                return
            for old in dropped:
                self._free_index(old.local_index, old)
            peer.timers.handshake_complete(now)
            peer.last_handshake = self._wall_clock()
            self._counters["handshakes_completed"] += 1
            if self._log is not None:
                self._log.debug("%s: handshake complete (responder, key confirmed)", peer)
            self._send_staged_locked(peer, now)

    def _receive_handshake(self, datagram: bytes, src: Any, now: float) -> DropReason | None:
        ident, checker = self._identity, self._checker
        if ident is None or checker is None:
            return self._drop_logged(DropReason.NO_PRIVATE_KEY, src)
        try:
            msg = parse_message(datagram)
        except MessageParseError:
            return self._drop_logged(DropReason.MALFORMED, src)
        if isinstance(msg, CookieReply):
            return self._receive_cookie_reply(msg, src, now)
        if not isinstance(msg, (Initiation, Response)):
            return self._drop_logged(DropReason.MALFORMED, src)
        data = bytes(datagram)
        if not checker.check_mac1(data):
            return self._drop_logged(DropReason.BAD_MAC1, src)
        if now < self._under_load_until:
            with self._cookie_lock:
                if not checker.check_mac2(data, src, now):
                    reply = checker.create_reply(data, msg.sender, src, now)
                    self._push(None, src, reply.marshal())
                    return self._drop_logged(DropReason.COOKIE_SENT, src)
                if not self._limiter.allow(src, now):
                    return self._drop_logged(DropReason.RATE_LIMITED, src)
        if isinstance(msg, Initiation):
            return self._receive_initiation(ident, msg, src, now)
        return self._receive_response(ident, msg, src, now)

    def _receive_cookie_reply(self, msg: CookieReply, src: Any, now: float) -> DropReason | None:
        entry = self._index.get(msg.receiver)
        if entry is None:
            return self._drop_logged(DropReason.UNKNOWN_INDEX, src)
        peer = entry.peer if isinstance(entry, Keypair) else entry
        with peer.lock:
            if not peer.cookie_gen.consume_reply(msg, now):
                return self._drop_logged(DropReason.BAD_COOKIE_REPLY, src)
        self._counters["cookie_replies_consumed"] += 1
        return None

    def _receive_initiation(self, ident: StaticIdentity, msg: Initiation, src: Any, now: float) -> DropReason | None:
        opened = hsm.open_initiation(ident, msg)
        if isinstance(opened, DropReason):
            return self._drop_logged(opened, src)
        peer = self._peers.get(opened.remote_static)
        if peer is None:
            return self._drop_logged(DropReason.UNKNOWN_PEER, src)
        with peer.lock:
            if peer.removed or self._identity is not ident:
                return self._drop_logged(DropReason.UNKNOWN_PEER, src)
            hs = peer.handshake
            err = hsm.accept_initiation(opened, hs, now=now, initiation_rate=self.timings.handshake_initiation_rate)
            if err is not None:
                return self._drop_logged(err, src)
            peer.endpoint = src
            t = peer.timers
            t.any_authenticated_packet_traversal(now)
            t.any_authenticated_packet_received(now)
            # Send the response (wireguard-go SendHandshakeResponse).
            # Crossing initiations (both sides initiate at once): accepting theirs replaces our
            # own in-flight initiation and frees its index, so their response to ours is dropped
            # (UNKNOWN_INDEX) and each side holds only an unconfirmed `next` keypair, which cannot
            # send. Packets stay staged (a new initiation is rate-limited by the response sent
            # here) until the retransmit timer, REKEY_TIMEOUT + jitter (5-5.33 s) after our first
            # initiation, sends one that completes. wireguard-go @ f333402 does the same:
            # CreateMessageResponse deletes the initiation's index, ConsumeMessageResponse needs
            # handshakeInitiationCreated, SendHandshakeResponse sets lastSentHandshake. Kept
            # as-is on purpose; test_crossing_initiations_stall_until_the_retransmit_timer_*.
            t.response_sent(now)
            self._free_index(hs.local_index, peer)
            idx = self._new_index(peer)
            resp = hsm.create_response(hs, sender_index=idx, ephemeral=PrivateKey(self._random_bytes(32)))
            if resp is None:
                self._free_index(idx, peer)
                hs.zero()
                return self._drop_logged(DropReason.BAD_DH, src)
            data = peer.cookie_gen.add_macs(resp.marshal(), now)
            self._begin_session_locked(peer, idx, now)
            t.any_authenticated_packet_traversal(now)
            t.any_authenticated_packet_sent(now)
            self._counters["handshake_responses_sent"] += 1
            peer.rx_bytes += SIZE_INITIATION
            peer.tx_bytes += len(data)
            self._push(peer, src, data)
        return None

    def _begin_session_locked(self, peer: Peer, idx: int, now: float) -> Keypair:
        kp = hsm.derive_keypair(peer.handshake, now=now, peer=peer)
        assert kp is not None
        self._index[idx] = kp  # the handshake's index now names the keypair
        for old in peer.keypairs.install(kp):
            self._free_index(old.local_index, old)
        peer.timers.session_derived(now)
        return kp

    def _receive_response(self, ident: StaticIdentity, msg: Response, src: Any, now: float) -> DropReason | None:
        entry = self._index.get(msg.receiver)
        if entry.__class__ is not Peer:
            return self._drop_logged(DropReason.UNKNOWN_INDEX, src)
        peer: Peer = entry  # type: ignore[assignment]
        with peer.lock:
            if peer.removed or self._identity is not ident:
                return self._drop_logged(DropReason.UNKNOWN_PEER, src)
            err = hsm.consume_response(ident, msg, peer.handshake)
            if err is not None:
                return self._drop_logged(err, src)
            peer.endpoint = src
            peer.rx_bytes += SIZE_RESPONSE
            t = peer.timers
            t.any_authenticated_packet_traversal(now)
            t.any_authenticated_packet_received(now)
            self._begin_session_locked(peer, msg.receiver, now)
            t.handshake_complete(now)
            peer.last_handshake = self._wall_clock()
            self._counters["handshakes_completed"] += 1
            if self._log is not None:
                self._log.debug("%s: handshake complete (initiator)", peer)
            self._send_keepalive_locked(peer, now)  # key confirmation (or the staged packets)
        return None

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        best = None
        for peer in list(self._peers.values()):
            d = peer.timers.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timers(self, now: float) -> list[Outgoing]:
        """Fire every due peer timer, then return ``datagrams_to_send()``."""
        for peer in list(self._peers.values()):
            d = peer.timers.next_deadline()
            if d is None or d > now:
                continue
            with peer.lock:
                if peer.removed:
                    continue
                for action in peer.timers.handle_timer(now):
                    self._do_action_locked(peer, action, now)
        return self.datagrams_to_send()

    def _do_action_locked(self, peer: Peer, action: Action, now: float) -> None:
        if action is Action.SEND_HANDSHAKE_INITIATION:
            self._send_initiation_locked(peer, now, is_retry=True)
        elif action is Action.SEND_KEEPALIVE:
            self._send_keepalive_locked(peer, now)
        elif action is Action.ZERO_KEYS:
            self._zero_and_flush_locked(peer)
            self._counters["keys_zeroed"] += 1
        elif action is Action.GIVE_UP:
            peer.staged.clear()
            self._counters["handshakes_given_up"] += 1
            if self._log is not None:
                self._log.debug("%s: handshake did not complete, giving up", peer)

    def _zero_and_flush_locked(self, peer: Peer) -> None:
        for kp in peer.keypairs.clear():
            self._free_index(kp.local_index, kp)
            kp.exhaust(self._reject_msgs)
        hs = peer.handshake
        self._free_index(hs.local_index, peer)
        hs.zero()
        peer.staged.clear()
