"""The user's machine and node private keys in the OS keyring (Secret Service/KWallet/Keychain/Credential Manager).

Keys are created on first run (X25519, PyNaCl), kept only in the keyring and handed to the
helper over the LocalAPI (`POST /localapi/v0/meshvpn/keys`). A plaintext or fail backend
is refused with a plain-words message: nothing secret is ever written to a file. Keyring
calls block (D-Bus), so the GUI runs them in an executor thread. Keys print as short
public forms only.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from typing import Any

SERVICE = "meshvpn"
MACHINE_ENTRY = "machine-private-key"
NODE_ENTRY = "node-private-key"
PRIVATE_PREFIX = "privkey:"  # Tailscale's text form of private keys (types/key)
KEY_LEN = 32

# Backends that keep secrets in an OS-managed, encrypted store. Everything else (keyrings.alt
# plaintext/encrypted files, the fail and null backends) is refused.
SECURE_BACKEND_MODULES = (
    "keyring.backends.SecretService",
    "keyring.backends.libsecret",
    "keyring.backends.kwallet",
    "keyring.backends.macOS",
    "keyring.backends.Windows",
)

NO_KEYRING_HELP = (
    "meshvpn keeps this device's keys in your desktop's keyring, and none is available ({found}). "
    "meshvpn never writes keys to a file. Install and unlock GNOME Keyring or KWallet "
    "(for example: sudo apt install gnome-keyring), log out and in again, then retry."
)


class KeyringUnavailable(Exception):
    """No secure keyring backend: the message says what to do."""


class PrivateKey:
    """A 32-byte X25519 private key; its repr never shows key material."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_LEN:
            raise ValueError(f"private key must be {KEY_LEN} bytes, got {len(raw)}")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> "PrivateKey":
        from nacl.public import PrivateKey as NaclPrivate

        return cls(bytes(NaclPrivate.generate()))

    @classmethod
    def from_text(cls, text: str) -> "PrivateKey":
        if not text.startswith(PRIVATE_PREFIX):
            raise ValueError("private key text must start with 'privkey:'")
        return cls(bytes.fromhex(text[len(PRIVATE_PREFIX) :]))

    def to_text(self) -> str:
        return PRIVATE_PREFIX + self._raw.hex()

    def public(self) -> bytes:
        from nacl.public import PrivateKey as NaclPrivate

        if self.is_zero():
            raise ValueError("zero private key has no public key")
        return bytes(NaclPrivate(self._raw).public_key)

    def public_short(self) -> str:
        """Short public form for logs and UI, like Tailscale's ShortString: [abcde]."""
        return "[" + base64.b64encode(self.public()).decode()[:5] + "]"

    def is_zero(self) -> bool:
        return hmac.compare_digest(self._raw, bytes(KEY_LEN))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self.public())

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_short()})"

    __str__ = __repr__


@dataclass(frozen=True)
class DeviceKeys:
    machine: PrivateKey
    node: PrivateKey

    def payload(self) -> dict[str, str]:
        """Body of POST /localapi/v0/meshvpn/keys (never logged)."""
        return {"MachineKey": self.machine.to_text(), "NodeKey": self.node.to_text()}

    def __repr__(self) -> str:
        return f"DeviceKeys(machine={self.machine.public_short()}, node={self.node.public_short()})"


def node_public_text(key: PrivateKey) -> str:
    """The helper's text form of the public half: "nodekey:<64 hex>" (what Notify/KeysInfo carry)."""
    return "nodekey:" + key.public().hex()


def short_public_text(text: str) -> str:
    """ "nodekey:<hex>" → "[abcde]" (ShortString-style, for logs); "[?]" if unreadable."""
    try:
        raw = bytes.fromhex(text.split(":", 1)[1])
    except (IndexError, ValueError):
        return "[?]"
    return "[" + base64.b64encode(raw).decode()[:5] + "]"


def backend_name(backend: Any) -> str:
    return f"{type(backend).__module__}.{type(backend).__name__}"


def secure_backend(backend: Any) -> Any:
    """Return the secure backend behind `backend` (unwrapping a chainer) or raise KeyringUnavailable."""
    candidates = list(getattr(backend, "backends", None) or [backend])
    for b in candidates:
        module = type(b).__module__
        if any(module == m or module.startswith(m + ".") for m in SECURE_BACKEND_MODULES):
            return b
    found = ", ".join(backend_name(b) for b in candidates) or "none"
    raise KeyringUnavailable(NO_KEYRING_HELP.format(found=found))


class KeyStore:
    """Loads or creates the device keys in a secure keyring backend (blocking calls)."""

    def __init__(self, backend: Any = None, service: str = SERVICE) -> None:
        if backend is None:
            import keyring

            backend = keyring.get_keyring()
        self._backend_any = backend
        self.service = service

    @property
    def backend(self) -> Any:
        return secure_backend(self._backend_any)

    def load_or_create(self) -> DeviceKeys:
        backend = self.backend
        try:
            machine = self._get_or_make(backend, MACHINE_ENTRY)
            node = self._get_or_make(backend, NODE_ENTRY)
        except KeyringUnavailable:
            raise
        except Exception as e:  # keyring.errors.* (locked, dismissed prompt, D-Bus failure)
            raise KeyringUnavailable(
                f"The keyring ({backend_name(backend)}) refused access: {type(e).__name__}. "
                "Unlock your keyring and retry; meshvpn never writes keys to a file."
            ) from None
        return DeviceKeys(machine, node)

    def rotate_node_key(self) -> DeviceKeys:
        """A fresh node key (after logout); the machine key stays."""
        backend = self.backend
        backend.set_password(self.service, NODE_ENTRY, PrivateKey.generate().to_text())
        return self.load_or_create()

    def store_node_key(self, node: PrivateKey) -> DeviceKeys:
        """Keep the node key the control server rotated to (so the next start hands it over); the machine key stays."""
        if node.is_zero():
            raise ValueError("refusing to store a zero node key")
        backend = self.backend
        try:
            backend.set_password(self.service, NODE_ENTRY, node.to_text())
            stored = backend.get_password(self.service, NODE_ENTRY)
        except Exception as e:  # keyring.errors.* (locked, dismissed prompt, D-Bus failure)
            raise KeyringUnavailable(
                f"The keyring ({backend_name(backend)}) refused to store the new node key: {type(e).__name__}."
            ) from None
        if stored != node.to_text():
            raise KeyringUnavailable(f"The keyring ({backend_name(backend)}) did not keep the key it was given.")
        return self.load_or_create()

    def _get_or_make(self, backend: Any, entry: str) -> PrivateKey:
        text = backend.get_password(self.service, entry)
        if text:
            try:
                key = PrivateKey.from_text(text)
                if not key.is_zero():
                    return key
            except ValueError:
                pass  # unreadable entry: replace it
        key = PrivateKey.generate()
        backend.set_password(self.service, entry, key.to_text())
        stored = backend.get_password(self.service, entry)
        if stored != key.to_text():
            raise KeyringUnavailable(f"The keyring ({backend_name(backend)}) did not keep the key it was given.")
        return key
