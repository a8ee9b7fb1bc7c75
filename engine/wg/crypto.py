"""WireGuard primitives (whitepaper §5.4): BLAKE2s HASH/MAC, HMAC, KDF1-3, X25519, AEADs, TAI64N."""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

KEY_SIZE = 32  # X25519 keys, symmetric keys, chaining keys, hashes
HASH_SIZE = 32  # BLAKE2s-256
MAC_SIZE = 16  # keyed BLAKE2s-128 (mac1, mac2, cookie)
AEAD_TAG_SIZE = 16  # Poly1305 tag
XNONCE_SIZE = 24  # XChaCha20-Poly1305 nonce (cookie reply)
TAI64N_SIZE = 12  # 8 bytes seconds + 4 bytes nanoseconds, big-endian

_NONCE = struct.Struct("<4xQ")  # §5.4.6: 32 zero bits then the 64-bit counter, little-endian
_TAI64 = struct.Struct(">QI")
_TAI64_BASE = 0x400000000000000A  # TAI64 label 2^62 plus the 10 s TAI-UTC offset (wireguard-go)
_TAI64_WHITENER = 0xFFFFFF  # nanoseconds rounded down to 2^24 ns (~16.8 ms), hides clock detail
_ZERO32 = bytes(32)


class AuthenticationError(ValueError):
    """An AEAD tag did not verify (tampered, wrong key or wrong associated data)."""


class DHError(ValueError):
    """X25519 produced the all-zero shared secret (a low-order public key)."""


def hash_(*parts: bytes) -> bytes:
    """HASH(parts...) = BLAKE2s-256 over the concatenation."""
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data) = keyed BLAKE2s with a 16-byte output (mac1, mac2, cookie)."""
    return hashlib.blake2s(data, digest_size=MAC_SIZE, key=key).digest()


def hmac_blake2s(key: bytes, data: bytes) -> bytes:
    """HMAC(key, data) with BLAKE2s-256 (RFC 2104, block size 64)."""
    return _hmac.new(key, data, hashlib.blake2s).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1: τ1 = HMAC(HMAC(key, data), 0x1)."""
    t0 = hmac_blake2s(key, data)
    return hmac_blake2s(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2: (τ1, τ2) with τ2 = HMAC(τ0, τ1 || 0x2)."""
    t0 = hmac_blake2s(key, data)
    t1 = hmac_blake2s(t0, b"\x01")
    t2 = hmac_blake2s(t0, t1 + b"\x02")
    return t1, t2


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3: (τ1, τ2, τ3) with τ3 = HMAC(τ0, τ2 || 0x3)."""
    t0 = hmac_blake2s(key, data)
    t1 = hmac_blake2s(t0, b"\x01")
    t2 = hmac_blake2s(t0, t1 + b"\x02")
    t3 = hmac_blake2s(t0, t2 + b"\x03")
    return t1, t2, t3


def nonce(counter: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce for a 64-bit counter (4 zero bytes || LE64)."""
    return _NONCE.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD(key, counter, plaintext, ad): ChaCha20-Poly1305, ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(_NONCE.pack(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of aead_encrypt; raises AuthenticationError on a bad tag."""
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), ciphertext, ad)
    except InvalidTag as e:
        raise AuthenticationError("aead tag mismatch") from e


def xaead_encrypt(key: bytes, xnonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XAEAD: XChaCha20-Poly1305 with a 24-byte nonce (cookie replies, §5.4.7)."""
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, xnonce, key)


def xaead_decrypt(key: bytes, xnonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of xaead_encrypt; raises AuthenticationError on a bad tag."""
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, xnonce, key)
    except CryptoError as e:
        raise AuthenticationError("xaead tag mismatch") from e


class PrivateKey:
    """An X25519 private key; never shows its bytes (repr prints the public key's short form)."""

    __slots__ = ("_key", "_raw", "_public")

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != KEY_SIZE:
            raise ValueError(f"private key: want {KEY_SIZE} bytes, got {len(raw)}")
        self._raw = raw
        self._key = X25519PrivateKey.from_private_bytes(raw)
        self._public = PublicKey(self._key.public_key().public_bytes_raw())

    def public(self) -> "PublicKey":
        """The matching public key."""
        return self._public

    @classmethod
    def generate(cls, random_bytes) -> "PrivateKey":
        """A new key from the injected random source (clamping is done by X25519 itself)."""
        return cls(random_bytes(KEY_SIZE))

    def exchange(self, peer: "PublicKey | bytes") -> bytes:
        """DH(self, peer); raises DHError for the all-zero result."""
        try:
            out = self._key.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))
        except ValueError as e:  # cryptography refuses low-order points
            raise DHError("x25519 produced the zero shared secret") from e
        if out == _ZERO32:
            raise DHError("x25519 produced the zero shared secret")
        return out

    def raw(self) -> bytes:
        """The secret bytes; for the caller that must persist or hand the key over."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and _hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateKey(public={self._public.short()})"

    __str__ = __repr__


class PublicKey(bytes):
    """A 32-byte X25519 public key (a bytes subclass, so it hashes and compares as bytes)."""

    def __new__(cls, raw: bytes) -> "PublicKey":
        if len(raw) != KEY_SIZE:
            raise ValueError(f"public key: want {KEY_SIZE} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    def short(self) -> str:
        """The first 8 base64 characters in brackets, like wireguard-go logs peers."""
        return "[" + base64.b64encode(bytes(self)).decode()[:8] + "]"

    def __repr__(self) -> str:
        return f"PublicKey({self.short()})"


def tai64n(wall_time: float) -> bytes:
    """TAI64N label for a UNIX time, nanoseconds whitened to 2^24 ns (as wireguard-go does)."""
    secs = int(wall_time // 1)
    nanos = int(round((wall_time - secs) * 1e9))
    if nanos >= 1_000_000_000:
        secs, nanos = secs + 1, nanos - 1_000_000_000
    return _TAI64.pack(_TAI64_BASE + secs, nanos & ~_TAI64_WHITENER)


def tai64n_to_unix(stamp: bytes) -> float:
    """Inverse of tai64n (to the whitened precision)."""
    secs, nanos = _TAI64.unpack(stamp)
    return (secs - _TAI64_BASE) + nanos / 1e9
