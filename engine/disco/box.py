"""Disco packet sealing and opening (sans-IO): magic, sender disco key, nonce, NaCl box."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.public

from engine.disco.message import DiscoParseError, Message, parse

# Outer layout (tailscale disco/disco.go):
#   6b magic "TS💬" (54 53 f0 9f 92 ac) | 32b sender disco public key | 24b nonce | box (16b tag + plaintext)
MAGIC = b"TS\xf0\x9f\x92\xac"
KEY_LEN = 32
NONCE_LEN = 24
TAG_LEN = 16
HEADER_LEN = len(MAGIC) + KEY_LEN + NONCE_LEN  # 62
MIN_LEN = len(MAGIC) + KEY_LEN + NONCE_LEN  # looks-like test (tailscale: len >= 62)


def looks_like_disco(b: bytes) -> bool:
    """Demux test: starts with the disco magic and is long enough for the header."""
    return len(b) >= MIN_LEN and b[:6] == MAGIC


def sender_key(b: bytes) -> bytes:
    """The sender's disco public key of a packet for which looks_like_disco() is true."""
    return bytes(b[6:38])


@dataclass
class DiscoCounters:
    """Drop counters for disco input (peer input is dropped and counted, never raised)."""

    not_disco: int = 0
    unknown_sender: int = 0
    bad_box: int = 0
    bad_payload: int = 0
    unknown_type: int = 0
    opened: int = 0


@dataclass
class DiscoCrypto:
    """Our disco private key plus a cache of precomputed shared keys (one Box per peer)."""

    private: nacl.public.PrivateKey
    random: Callable[[int], bytes]
    counters: DiscoCounters = field(default_factory=DiscoCounters)
    _boxes: dict[bytes, nacl.public.Box] = field(default_factory=dict)

    @property
    def public(self) -> bytes:
        return bytes(self.private.public_key)

    def _box(self, peer: bytes) -> nacl.public.Box:
        box = self._boxes.get(peer)
        if box is None:
            box = nacl.public.Box(self.private, nacl.public.PublicKey(peer))
            self._boxes[peer] = box
        return box

    def forget(self, peer: bytes) -> None:
        """Drop the cached shared key of a peer no longer in the netmap."""
        self._boxes.pop(peer, None)

    def seal(self, peer: bytes, msg: Message) -> bytes:
        """Whole disco packet for `peer` (their disco public key)."""
        nonce = self.random(NONCE_LEN)
        sealed = self._box(peer).encrypt(msg.marshal(), nonce)  # nonce || tag || ct
        return MAGIC + self.public + bytes(sealed)

    def open(self, b: bytes, known: Callable[[bytes], bool]) -> tuple[bytes, Message] | None:
        """(sender disco key, message), or None after counting why it was dropped."""
        if not looks_like_disco(b):
            self.counters.not_disco += 1
            return None
        sender = sender_key(b)
        if not known(sender):
            self.counters.unknown_sender += 1
            return None
        if len(b) < HEADER_LEN + TAG_LEN:
            self.counters.bad_box += 1
            return None
        try:
            plain = self._box(sender).decrypt(bytes(b[38:]))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            self.counters.bad_box += 1
            return None
        try:
            msg = parse(plain)
        except DiscoParseError:
            self.counters.bad_payload += 1
            return None
        if msg is None:
            self.counters.unknown_type += 1
            return None
        self.counters.opened += 1
        return sender, msg
