"""WireGuard's UAPI configuration protocol on /var/run/wireguard/IFACE.sock: a pure codec plus a thin socket server.

Protocol (https://www.wireguard.com/xplatform/), one request per blank-line-terminated block::

    client: get=1\\n\\n
    server: private_key=<hex>\\n listen_port=N\\n [fwmark=N\\n]
            { public_key=<hex>\\n preshared_key=<hex>\\n protocol_version=1\\n [endpoint=ip:port\\n]
              last_handshake_time_sec=N\\n last_handshake_time_nsec=N\\n tx_bytes=N\\n rx_bytes=N\\n
              persistent_keepalive_interval=N\\n {allowed_ip=cidr\\n} }
            errno=0\\n\\n

    client: set=1\\n <interface keys> { public_key=<hex>\\n <peer keys> } \\n
    server: errno=<0 or -errno>\\n\\n

Interface keys: private_key, listen_port, fwmark, replace_peers=true. Peer keys (after the
peer's public_key line): remove=true, update_only=true, preshared_key, endpoint,
persistent_keepalive_interval, replace_allowed_ips=true, allowed_ip (a leading "-" removes
it, as newer wg(8) sends), protocol_version=1.

The codec is pure: ``handle_request(text, state) -> Reply`` turns a request and a
:class:`DeviceState` snapshot into :class:`Action` values and a response. A whole ``set``
request is validated before anything is applied (an invalid request changes nothing).
:class:`UapiServer` is the adapter: it serves the socket with threads, snapshots the
``engine.dataplane.device.Device`` for ``get`` and applies actions for ``set``.

Errors follow wireguard-go: ``set`` answers ``errno=-22`` (EINVAL) for invalid values or
keys, ``-71`` (EPROTO) for malformed lines, ``-98`` (EADDRINUSE) when the port is taken,
``-5`` (EIO) for other failures; wg(8) turns the negative number back into errno.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import ipaddress
import logging
import os
import selectors
import socket
import stat
import threading
from pathlib import Path
from typing import Callable, Iterable, Union

# --- pure codec ---------------------------------------------------------------------------

KEY_LEN = 32
MAX_LINE = 4096  # bytes; longer lines are a protocol error
PROTOCOL_VERSION = 1
ERR_IO = _errno.EIO
ERR_PROTO = _errno.EPROTO
ERR_INVAL = _errno.EINVAL
ERR_ADDRINUSE = _errno.EADDRINUSE

_INTERFACE_KEYS = frozenset({"private_key", "listen_port", "fwmark", "replace_peers"})


class UapiError(Exception):
    """A request the server rejects; `errno` is the positive errno sent back (negated for set)."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()
"""A peer field the request did not mention (leave it as it is)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class PeerState:
    """One peer as `get` reports it."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: str | None = None  # "ip:port" / "[ip6]:port"
    allowed_ips: tuple[str, ...] = ()
    last_handshake: float | None = None  # unix time
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceState:
    """A device snapshot as `get` reports it."""

    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: tuple[PeerState, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class SetPrivateKey:
    key: bytes | None  # None: clear (the request sent all zeros)


@dataclasses.dataclass(frozen=True, slots=True)
class SetListenPort:
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class SetFwmark:
    mark: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReplacePeers:
    """Remove every peer (before the peers that follow in the same request are added)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RemovePeer:
    public_key: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class UpsertPeer:
    """Create or update a peer; UNSET fields stay as they are."""

    public_key: bytes
    update_only: bool = False  # only touch the peer if it already exists
    endpoint: object = UNSET  # (ip_text, port)
    preshared_key: object = UNSET  # bytes, or None to clear (all zeros)
    persistent_keepalive: object = UNSET  # int seconds
    replace_allowed_ips: bool = False
    allowed_ips: tuple[Network, ...] = ()
    remove_allowed_ips: tuple[Network, ...] = ()


Action = Union[SetPrivateKey, SetListenPort, SetFwmark, ReplacePeers, RemovePeer, UpsertPeer]


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What one request produced: its operation, the actions to apply (set) and the response text."""

    op: str  # "get", "set" or "" (invalid operation)
    actions: tuple[Action, ...]
    response: str


def _hex_key(key: str, value: str) -> bytes:
    if len(value) != 2 * KEY_LEN:
        raise UapiError(ERR_INVAL, f"{key}: expected {2 * KEY_LEN} hex digits, got {len(value)}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UapiError(ERR_INVAL, f"{key}: not hex") from None


def _uint(key: str, value: str, maximum: int) -> int:
    if not value.isdigit():
        raise UapiError(ERR_INVAL, f"{key}: not a decimal number: {value!r}")
    n = int(value)
    if n > maximum:
        raise UapiError(ERR_INVAL, f"{key}: {n} > {maximum}")
    return n


def _true(key: str, value: str) -> None:
    if value != "true":
        raise UapiError(ERR_INVAL, f"{key}: only 'true' is accepted, got {value!r}")


def parse_endpoint(value: str) -> tuple[str, int]:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820`` -> (ip_text, port); UapiError(EINVAL) otherwise."""
    try:
        if value.startswith("["):
            host, sep, port = value[1:].partition("]:")
            if not sep:
                raise ValueError
        else:
            host, sep, port = value.rpartition(":")
            if not sep or ":" in host:
                raise ValueError
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if not port.isdigit() or int(port) > 65535:
            raise ValueError
    except ValueError:
        raise UapiError(ERR_INVAL, f"endpoint: invalid {value!r}") from None
    return str(ip), int(port)


def _network(value: str) -> Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise UapiError(ERR_INVAL, f"allowed_ip: invalid {value!r}") from None


class _PeerBuilder:
    def __init__(self, public_key: bytes):
        self.public_key = public_key
        self.remove = False
        self.fields: dict[str, object] = {}
        self.allowed: list[Network] = []
        self.removed: list[Network] = []

    def action(self) -> Action:
        if self.remove:
            return RemovePeer(self.public_key)
        return UpsertPeer(
            self.public_key, allowed_ips=tuple(self.allowed), remove_allowed_ips=tuple(self.removed), **self.fields
        )  # type: ignore[arg-type]


def parse_set(lines: Iterable[str]) -> tuple[Action, ...]:
    """Validate the body of a `set=1` request (the lines after it) into actions; raises UapiError."""
    actions: list[Action] = []
    peer: _PeerBuilder | None = None
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(ERR_PROTO, f"malformed line {line[:40]!r}")
        if key == "public_key":
            if peer is not None:
                actions.append(peer.action())
            peer = _PeerBuilder(_hex_key(key, value))
            continue
        if peer is None:
            if key == "private_key":
                k = _hex_key(key, value)
                actions.append(SetPrivateKey(None if k == bytes(KEY_LEN) else k))
            elif key == "listen_port":
                actions.append(SetListenPort(_uint(key, value, 0xFFFF)))
            elif key == "fwmark":
                actions.append(SetFwmark(_uint(key, value, 0xFFFFFFFF) if value else 0))
            elif key == "replace_peers":
                _true(key, value)
                actions.append(ReplacePeers())
            else:
                raise UapiError(ERR_INVAL, f"invalid device key {key!r}")
            continue
        if key == "remove":
            _true(key, value)
            peer.remove = True
        elif key == "update_only":
            _true(key, value)
            peer.fields["update_only"] = True
        elif key == "preshared_key":
            k = _hex_key(key, value)
            peer.fields["preshared_key"] = None if k == bytes(KEY_LEN) else k
        elif key == "endpoint":
            peer.fields["endpoint"] = parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            peer.fields["persistent_keepalive"] = _uint(key, value, 0xFFFF)
        elif key == "replace_allowed_ips":
            _true(key, value)
            peer.fields["replace_allowed_ips"] = True
            peer.allowed.clear()
            peer.removed.clear()
        elif key == "allowed_ip":
            if value.startswith("-"):
                peer.removed.append(_network(value[1:]))
            else:
                peer.allowed.append(_network(value))
        elif key == "protocol_version":
            if value != str(PROTOCOL_VERSION):
                raise UapiError(ERR_INVAL, f"protocol_version: unsupported {value!r}")
        elif key in _INTERFACE_KEYS:
            raise UapiError(ERR_INVAL, f"device key {key!r} after a peer")
        else:
            raise UapiError(ERR_INVAL, f"invalid peer key {key!r}")
    if peer is not None:
        actions.append(peer.action())
    return tuple(actions)


def format_get(state: DeviceState) -> str:
    """The `get` response body (without the trailing errno line)."""
    out = []
    if state.private_key:
        out.append(f"private_key={state.private_key.hex()}")
    if state.listen_port:
        out.append(f"listen_port={state.listen_port}")
    if state.fwmark:
        out.append(f"fwmark={state.fwmark}")
    for p in state.peers:
        out.append(f"public_key={p.public_key.hex()}")
        out.append(f"preshared_key={(p.preshared_key or bytes(KEY_LEN)).hex()}")
        out.append(f"protocol_version={PROTOCOL_VERSION}")
        if p.endpoint:
            out.append(f"endpoint={p.endpoint}")
        sec, nsec = 0, 0
        if p.last_handshake:
            sec = int(p.last_handshake)
            nsec = min(999_999_999, int(round((p.last_handshake - sec) * 1e9)))
        out.append(f"last_handshake_time_sec={sec}")
        out.append(f"last_handshake_time_nsec={nsec}")
        out.append(f"tx_bytes={p.tx_bytes}")
        out.append(f"rx_bytes={p.rx_bytes}")
        out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        out.extend(f"allowed_ip={ip}" for ip in p.allowed_ips)
    return "".join(line + "\n" for line in out)


def errno_response(code: int) -> str:
    return f"errno={code}\n\n"


def handle_request(text: str, state: DeviceState | None) -> Reply:
    """One request (its lines, with or without the final blank line) -> Reply.

    `state` is needed for `get` only. For `set`, `response` assumes the actions apply
    cleanly; the adapter replaces it with `errno_response(-e)` if applying fails.
    """
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return Reply("", (), errno_response(-ERR_PROTO))
    op, body = lines[0], lines[1:]
    if op == "get=1":
        if body:
            return Reply("get", (), errno_response(ERR_INVAL))
        return Reply("get", (), format_get(state or DeviceState()) + errno_response(0))
    if op == "set=1":
        try:
            actions = parse_set(body)
        except UapiError as e:
            return Reply("set", (), errno_response(-e.errno))
        return Reply("set", actions, errno_response(0))
    return Reply("", (), errno_response(-ERR_PROTO))


# --- adapter: Device <-> codec -----------------------------------------------------------


def snapshot(device, private_key: bytes | None = None) -> DeviceState:
    """A DeviceState from an engine.dataplane.device.Device (or anything with the same API).

    `private_key` is used when the device does not expose a ``private_key`` property.
    """
    peers = tuple(
        PeerState(
            public_key=bytes(p.public_key),
            preshared_key=p.preshared_key,
            endpoint=None if p.endpoint is None else str(p.endpoint),
            allowed_ips=tuple(str(n) for n in p.allowed_ips),
            last_handshake=p.last_handshake,
            rx_bytes=p.rx_bytes,
            tx_bytes=p.tx_bytes,
            persistent_keepalive=p.persistent_keepalive or 0,
        )
        for p in device.peers()
    )
    pk = getattr(device, "private_key", private_key)
    return DeviceState(pk, device.listen_port, device.fwmark, peers)


def _own_public_key(device) -> bytes | None:
    pub = getattr(device, "public_key", None)
    if pub is not None and not callable(pub):
        return bytes(pub)
    private_key = getattr(device, "private_key", None)
    if not private_key:
        return None
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def apply_actions(device, actions: Iterable[Action]) -> None:
    """Apply `set` actions to a Device in order; raises UapiError on failure."""
    try:
        for a in actions:
            if isinstance(a, SetPrivateKey):
                device.set_private_key(a.key)
            elif isinstance(a, SetListenPort):
                device.set_listen_port(a.port)
            elif isinstance(a, SetFwmark):
                device.set_fwmark(a.mark)
            elif isinstance(a, ReplacePeers):
                device.remove_all_peers()
            elif isinstance(a, RemovePeer):
                device.remove_peer(a.public_key)
            elif isinstance(a, UpsertPeer):
                _apply_upsert(device, a)
    except UapiError:
        raise
    except OSError as e:
        raise UapiError(e.errno if e.errno == ERR_ADDRINUSE else ERR_IO, str(e)) from e
    except ValueError as e:
        raise UapiError(ERR_INVAL, str(e)) from e
    except Exception as e:  # a Device bug must not kill the socket server
        raise UapiError(ERR_IO, f"{type(e).__name__}: {e}") from e


def _apply_upsert(device, a: UpsertPeer) -> None:
    if a.public_key == _own_public_key(device):
        return  # wireguard-go ignores a peer carrying the interface's own key
    existing = {bytes(p.public_key): p for p in device.peers()}
    current = existing.get(a.public_key)
    if a.update_only and current is None:
        return
    kw: dict[str, object] = {}
    if a.endpoint is not UNSET:
        kw["endpoint"] = a.endpoint
    if a.preshared_key is not UNSET:
        kw["preshared_key"] = a.preshared_key
    if a.persistent_keepalive is not UNSET:
        kw["persistent_keepalive"] = a.persistent_keepalive
    allowed = list(a.allowed_ips)
    replace = a.replace_allowed_ips
    if a.remove_allowed_ips:
        base = [] if replace or current is None else list(current.allowed_ips)
        gone = set(a.remove_allowed_ips)
        allowed = [n for n in base + allowed if n not in gone]
        replace = True
    device.upsert_peer(a.public_key, allowed_ips=allowed, replace_allowed_ips=replace, **kw)


def _stale(path: Path) -> bool:
    """True when `path` is a socket nobody answers on (safe to remove)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError:
        return False
    else:
        return False
    finally:
        s.close()


class UapiServer:
    """Serves the UAPI for `device` on SOCKET_DIR/IFNAME.sock from a background thread.

    ``start()`` refuses (RuntimeError) when another live process serves the same socket;
    a stale socket (connect refused) is replaced. ``close()`` stops accepting, closes
    client connections and removes the socket file if it is still ours.
    """

    SOCKET_DIR = Path("/var/run/wireguard")

    def __init__(
        self,
        device,
        ifname: str,
        *,
        socket_dir: Path | str | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        apply: Callable[[object, Iterable[Action]], None] = apply_actions,
        private_key: bytes | None = None,
    ) -> None:
        self.device = device
        self.ifname = ifname
        self.dir = Path(socket_dir) if socket_dir is not None else self.SOCKET_DIR
        self.path = self.dir / f"{ifname}.sock"
        self._log = logger or logging.getLogger("engine.dataplane.uapi")
        self._apply = apply
        self._private_key = private_key  # reported by get when the device has no private_key property
        self._lock = threading.Lock()  # serializes set/get against each other
        self._sock: socket.socket | None = None
        self._ino: int | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._closed = False

    def __enter__(self) -> "UapiServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if "/" in self.ifname or not self.ifname or len(self.ifname) > 15:
            raise ValueError(f"invalid interface name {self.ifname!r}")
        self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not _stale(self.path):
                raise RuntimeError(f"{self.path} is in use by a running process")
            self._log.info("removing stale UAPI socket %s", self.path)
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
        self._ino = os.stat(self.path).st_ino
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._accept_loop, name=f"uapi-{self.ifname}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for c in list(self._conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._sock is not None:
            self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._ino:
                self.path.unlink()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    try:
                        conn, _addr = self._sock.accept()
                    except OSError:
                        continue
                    self._conns.add(conn)
                    threading.Thread(
                        target=self._serve, args=(conn,), name=f"uapi-{self.ifname}-conn", daemon=True
                    ).start()
        finally:
            sel.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            f = conn.makefile("rb")
            while True:
                lines: list[str] = []
                while True:
                    raw = f.readline(MAX_LINE + 1)
                    if not raw:
                        return  # EOF (a partial request is dropped)
                    if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
                        conn.sendall(errno_response(-ERR_PROTO).encode())
                        return
                    line = raw[:-1].decode("utf-8", "replace")
                    if line == "":
                        break
                    lines.append(line)
                if not lines:
                    continue
                conn.sendall(self.respond("\n".join(lines)).encode())
        except OSError:
            pass
        finally:
            self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def respond(self, request: str) -> str:
        """Handle one request against the device (the socket-free core of the server)."""
        with self._lock:
            try:
                state = snapshot(self.device, self._private_key) if request.startswith("get=1") else None
            except Exception:
                self._log.exception("UAPI get on %s failed", self.ifname)
                return errno_response(ERR_IO)
            reply = handle_request(request, state)
            if reply.op == "set" and reply.actions:
                try:
                    self._apply(self.device, reply.actions)
                except UapiError as e:
                    self._log.warning("UAPI set on %s failed: %s", self.ifname, e)
                    return errno_response(-e.errno)
                finally:
                    for a in reply.actions:
                        if isinstance(a, SetPrivateKey):
                            self._private_key = a.key
            return reply.response


__all__ = [
    "UapiError",
    "DeviceState",
    "PeerState",
    "SetPrivateKey",
    "SetListenPort",
    "SetFwmark",
    "ReplacePeers",
    "RemovePeer",
    "UpsertPeer",
    "Action",
    "Reply",
    "UNSET",
    "parse_set",
    "format_get",
    "handle_request",
    "parse_endpoint",
    "errno_response",
    "snapshot",
    "apply_actions",
    "UapiServer",
]
