"""Typed Curve25519 keys with Tailscale's text forms (mkey:, nodekey:, discokey:, chalpub:, nlpub:)."""

from __future__ import annotations

import hmac
import os
from typing import ClassVar, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

KEY_SIZE = 32  # bytes, every key type here
_ZERO = bytes(KEY_SIZE)

P = TypeVar("P", bound="_PublicKey")
K = TypeVar("K", bound="_PrivateKey")


class KeyError_(ValueError):
    """A key's text or binary form is malformed."""


def _parse_hex(cls_name: str, prefix: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise KeyError_(f"{cls_name}: expected str, got {type(text).__name__}")
    if not text.startswith(prefix):
        raise KeyError_(f"{cls_name}: missing prefix {prefix!r}")
    body = text[len(prefix) :]
    if len(body) != 2 * KEY_SIZE:
        raise KeyError_(f"{cls_name}: want {2 * KEY_SIZE} hex digits, got {len(body)}")
    try:
        return bytes.fromhex(body)
    except ValueError as e:
        raise KeyError_(f"{cls_name}: invalid hex") from e


class _PublicKey:
    """A 32-byte public key; immutable, hashable, prints as prefix + 64 hex digits."""

    PREFIX: ClassVar[str] = ""
    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes = _ZERO) -> None:
        raw = bytes(raw)
        if len(raw) != KEY_SIZE:
            raise KeyError_(f"{type(self).__name__}: want {KEY_SIZE} bytes, got {len(raw)}")
        object.__setattr__(self, "_raw", raw)

    def __setattr__(self, name, value):  # immutable
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def zero(cls: type[P]) -> P:
        return cls(_ZERO)

    @classmethod
    def from_text(cls: type[P], text: str) -> P:
        return cls(_parse_hex(cls.__name__, cls.PREFIX, text))

    @classmethod
    def from_hex(cls: type[P], text: str) -> P:
        """Untyped hex (as used by WireGuard UAPI)."""
        return cls(_parse_hex(cls.__name__, "", text))

    @property
    def raw(self) -> bytes:
        return self._raw

    def hex(self) -> str:
        return self._raw.hex()

    def __bytes__(self) -> bytes:
        return self._raw

    def is_zero(self) -> bool:
        return self._raw == _ZERO

    def short(self) -> str:
        """Short form for logs, like Go's ShortString: [abcde]."""
        return f"[{self._raw.hex()[:5]}]"

    def __str__(self) -> str:
        return self.PREFIX + self._raw.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.short()})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._raw == self._raw  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __reduce__(self):
        return (type(self), (self._raw,))


class _PrivateKey:
    """A 32-byte X25519 private key; never printed, compared in constant time."""

    PREFIX: ClassVar[str] = ""
    PUBLIC: ClassVar[type[_PublicKey]] = _PublicKey
    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != KEY_SIZE:
            raise KeyError_(f"{type(self).__name__}: want {KEY_SIZE} bytes, got {len(raw)}")
        object.__setattr__(self, "_raw", raw)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def generate(cls: type[K]) -> K:
        raw = bytearray(os.urandom(KEY_SIZE))
        # clamp like WireGuard/Go so the stored form is canonical
        raw[0] &= 248
        raw[31] = (raw[31] & 127) | 64
        return cls(bytes(raw))

    @classmethod
    def zero(cls: type[K]) -> K:
        return cls(_ZERO)

    @classmethod
    def from_text(cls: type[K], text: str) -> K:
        return cls(_parse_hex(cls.__name__, cls.PREFIX, text))

    def to_text(self) -> str:
        """The secret text form (for the state file only; never log it)."""
        return self.PREFIX + self._raw.hex()

    @property
    def raw(self) -> bytes:
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    def is_zero(self) -> bool:
        return hmac.compare_digest(self._raw, _ZERO)

    def public(self):
        if self.is_zero():
            raise KeyError_(f"{type(self).__name__}: public() of a zero key")
        pub = X25519PrivateKey.from_private_bytes(self._raw).public_key().public_bytes_raw()
        return self.PUBLIC(pub)

    def shared(self, peer: _PublicKey) -> bytes:
        """Raw X25519(self, peer)."""
        return X25519PrivateKey.from_private_bytes(self._raw).exchange(X25519PublicKey.from_public_bytes(peer.raw))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and hmac.compare_digest(self._raw, other._raw)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.public().raw if not self.is_zero() else b""))

    def __repr__(self) -> str:
        if self.is_zero():
            return f"{type(self).__name__}(zero)"
        return f"{type(self).__name__}(public={self.public().short()})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} is not picklable")


class MachinePublic(_PublicKey):
    PREFIX = "mkey:"


class MachinePrivate(_PrivateKey):
    PREFIX = "privkey:"
    PUBLIC = MachinePublic

    def public(self) -> MachinePublic:
        return super().public()  # type: ignore[return-value]


class NodePublic(_PublicKey):
    PREFIX = "nodekey:"


class NodePrivate(_PrivateKey):
    PREFIX = "privkey:"
    PUBLIC = NodePublic

    def public(self) -> NodePublic:
        return super().public()  # type: ignore[return-value]


class DiscoPublic(_PublicKey):
    PREFIX = "discokey:"


class DiscoPrivate(_PrivateKey):
    PREFIX = "privkey:"
    PUBLIC = DiscoPublic

    def public(self) -> DiscoPublic:
        return super().public()  # type: ignore[return-value]


class ChallengePublic(_PublicKey):
    PREFIX = "chalpub:"


class NLPublic(_PublicKey):
    """Tailnet-lock public key (ed25519 in Go; here we only carry the text form)."""

    PREFIX = "nlpub:"


class NLPrivate(_PrivateKey):
    """Tailnet-lock private key: an ed25519 seed; public() is the ed25519 public key."""

    PREFIX = "nlpriv:"
    PUBLIC = NLPublic

    def public(self) -> NLPublic:
        from nacl.signing import SigningKey

        if self.is_zero():
            raise KeyError_("NLPrivate: public() of a zero key")
        return NLPublic(bytes(SigningKey(self._raw).verify_key))


__all__ = [
    "KEY_SIZE",
    "KeyError_",
    "MachinePrivate",
    "MachinePublic",
    "NodePrivate",
    "NodePublic",
    "DiscoPrivate",
    "DiscoPublic",
    "ChallengePublic",
    "NLPublic",
    "NLPrivate",
]
