"""Parser for wg-quick style WireGuard configuration files ([Interface] + [Peer] sections).

Accepted keys (case-insensitive, as wg(8) and wg-quick(8) accept them)::

    [Interface]  PrivateKey, ListenPort, FwMark, Address, MTU, DNS (ignored with a warning),
                 Table, PreUp, PostUp, PreDown, PostDown, SaveConfig (ignored with a warning)
    [Peer]       PublicKey, PresharedKey, Endpoint (host:port, [v6]:port), AllowedIPs,
                 PersistentKeepalive

``#`` starts a comment; Address, AllowedIPs and DNS take comma-separated lists and may
repeat. Every error is a :class:`ConfigError` naming file, line and field, e.g.
``wg0.conf:7: PublicKey: not a valid base64 32-byte key``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
from pathlib import Path

KEY_LEN = 32
MIN_MTU = 576  # IPv4 minimum; IPv6 needs 1280 (checked only when an IPv6 address is configured)
MAX_MTU = 65535

_IGNORED_INTERFACE_KEYS = {"table", "preup", "postup", "predown", "postdown", "saveconfig"}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """An invalid configuration; str() is ``FILE:LINE: FIELD: reason``."""

    def __init__(self, filename: str, line: int, field: str, reason: str):
        super().__init__(f"{filename}:{line}: {field}: {reason}")
        self.filename = filename
        self.line = line
        self.field = field
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class PrivateKey:
    """32 raw key bytes; repr never shows them."""

    raw: bytes

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"

    def public(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return X25519PrivateKey.from_private_bytes(self.raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclasses.dataclass(frozen=True, slots=True)
class PeerConfig:
    public_key: bytes
    preshared_key: PrivateKey | None = None
    endpoint: tuple[str, int] | None = None  # (host or IP text, port); hosts are resolved by the caller
    allowed_ips: tuple[Network, ...] = ()
    persistent_keepalive: int = 0  # seconds, 0 = off
    line: int = 0  # where the [Peer] section starts

    def __repr__(self) -> str:
        key = base64.b64encode(self.public_key).decode()[:8]
        return f"PeerConfig({key}…, endpoint={self.endpoint}, allowed_ips={[str(n) for n in self.allowed_ips]})"


@dataclasses.dataclass(frozen=True, slots=True)
class InterfaceConfig:
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    fwmark: int = 0
    addresses: tuple[Interface, ...] = ()
    mtu: int | None = None
    dns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class WgConfig:
    interface: InterfaceConfig
    peers: tuple[PeerConfig, ...]
    warnings: tuple[str, ...] = ()


def _key(filename: str, lineno: int, field: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_LEN or len(value) != 44:
        raise ConfigError(filename, lineno, field, "not a valid base64 32-byte key")
    return raw


def _int(
    filename: str, lineno: int, field: str, value: str, lo: int, hi: int, *, off_ok: bool = False, hex_ok: bool = False
) -> int:
    v = value.strip()
    if off_ok and v.lower() == "off":
        return 0
    try:
        if hex_ok and v.lower().startswith("0x"):
            n = int(v[2:], 16) if v[2:].isalnum() else int("x")
        elif v.isdigit():
            n = int(v, 10)
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(filename, lineno, field, f"not a number: {value!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(filename, lineno, field, f"{n} out of range {lo}..{hi}")
    return n


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_endpoint(filename: str, lineno: int, value: str) -> tuple[str, int]:
    """``host:port`` / ``1.2.3.4:port`` / ``[v6]:port`` -> (host, port)."""
    field = "Endpoint"
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ConfigError(filename, lineno, field, f"expected [IPv6]:port, got {value!r}")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ConfigError(filename, lineno, field, f"not an IPv6 address: {host!r}") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ConfigError(filename, lineno, field, f"expected host:port, got {value!r}")
        if ":" in host:
            raise ConfigError(filename, lineno, field, f"IPv6 endpoints need brackets: {value!r}")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise ConfigError(filename, lineno, field, f"not an address or host name: {host!r}") from None
    if not port.isdigit():
        raise ConfigError(filename, lineno, field, f"not a port: {port!r}")
    p = int(port)
    if not 1 <= p <= 65535:
        raise ConfigError(filename, lineno, field, f"port {p} out of range 1..65535")
    return host, p


class _PeerDraft:
    def __init__(self, line: int):
        self.line = line
        self.public_key: bytes | None = None
        self.key_line = line
        self.preshared_key: PrivateKey | None = None
        self.endpoint: tuple[str, int] | None = None
        self.allowed_ips: list[Network] = []
        self.keepalive = 0


def parse(text: str, filename: str = "<config>") -> WgConfig:
    """Parse a configuration text; raises ConfigError on the first problem."""
    section: str | None = None
    seen_interface = False
    priv: PrivateKey | None = None
    port: int | None = None
    fwmark = 0
    addrs: list[Interface] = []
    mtu: int | None = None
    mtu_line = 0
    dns: list[str] = []
    warnings: list[str] = []
    peers: list[_PeerDraft] = []

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(filename, lineno, line, "malformed section header")
            name = line[1:-1].strip().lower()
            if name == "interface":
                if seen_interface:
                    raise ConfigError(filename, lineno, "[Interface]", "only one [Interface] section is allowed")
                seen_interface = True
            elif name == "peer":
                peers.append(_PeerDraft(lineno))
            else:
                raise ConfigError(filename, lineno, line, "unknown section (expected [Interface] or [Peer])")
            section = name
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(filename, lineno, line[:30], "expected 'Key = Value'")
        lk = key.lower()
        if section is None:
            raise ConfigError(filename, lineno, key, "outside of any section")
        if section == "interface":
            if lk == "privatekey":
                priv = PrivateKey(_key(filename, lineno, key, value))
            elif lk == "listenport":
                port = _int(filename, lineno, key, value, 0, 65535)
            elif lk == "fwmark":
                fwmark = _int(filename, lineno, key, value, 0, 0xFFFFFFFF, off_ok=True, hex_ok=True)
            elif lk == "address":
                for item in _list(value):
                    try:
                        addrs.append(ipaddress.ip_interface(item))
                    except ValueError:
                        raise ConfigError(filename, lineno, key, f"not an address/prefix: {item!r}") from None
            elif lk == "mtu":
                mtu = _int(filename, lineno, key, value, MIN_MTU, MAX_MTU)
                mtu_line = lineno
            elif lk == "dns":
                dns.extend(_list(value))
                warnings.append(f"{filename}:{lineno}: DNS: ignored (mesh-helper wg does not configure DNS)")
            elif lk in _IGNORED_INTERFACE_KEYS:
                warnings.append(f"{filename}:{lineno}: {key}: ignored")
            else:
                raise ConfigError(filename, lineno, key, "unknown [Interface] key")
        else:
            peer = peers[-1]
            if lk == "publickey":
                peer.public_key = _key(filename, lineno, key, value)
                peer.key_line = lineno
            elif lk == "presharedkey":
                peer.preshared_key = PrivateKey(_key(filename, lineno, key, value))
            elif lk == "endpoint":
                peer.endpoint = parse_endpoint(filename, lineno, value)
            elif lk == "allowedips":
                for item in _list(value):
                    try:
                        peer.allowed_ips.append(ipaddress.ip_network(item, strict=False))
                    except ValueError:
                        raise ConfigError(filename, lineno, key, f"not a CIDR prefix: {item!r}") from None
            elif lk == "persistentkeepalive":
                peer.keepalive = _int(filename, lineno, key, value, 0, 65535, off_ok=True)
            else:
                raise ConfigError(filename, lineno, key, "unknown [Peer] key")

    if not seen_interface:
        raise ConfigError(filename, 1, "[Interface]", "missing [Interface] section")
    if mtu is not None and mtu < 1280 and any(a.version == 6 for a in addrs):
        raise ConfigError(filename, mtu_line, "MTU", f"{mtu} is below 1280, the IPv6 minimum")
    seen: dict[bytes, int] = {}
    out: list[PeerConfig] = []
    own = priv.public() if priv else None
    for p in peers:
        if p.public_key is None:
            raise ConfigError(filename, p.line, "PublicKey", "missing in [Peer] section")
        if p.public_key in seen:
            raise ConfigError(filename, p.key_line, "PublicKey", f"duplicate peer (first at line {seen[p.public_key]})")
        if own is not None and p.public_key == own:
            raise ConfigError(filename, p.key_line, "PublicKey", "is the interface's own public key")
        seen[p.public_key] = p.key_line
        out.append(PeerConfig(p.public_key, p.preshared_key, p.endpoint, tuple(p.allowed_ips), p.keepalive, p.line))
    return WgConfig(InterfaceConfig(priv, port, fwmark, tuple(addrs), mtu, tuple(dns)), tuple(out), tuple(warnings))


def load(path: str | Path) -> WgConfig:
    """Read and parse `path` (errors name the file by its base name)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(p.name, 0, "file", e.strerror or str(e)) from e
    return parse(text, p.name)


__all__ = ["ConfigError", "PrivateKey", "PeerConfig", "InterfaceConfig", "WgConfig", "parse", "load", "parse_endpoint"]
