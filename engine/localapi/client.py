"""Async LocalAPI client (used by meshctl and the GUI); speaks to our helper or a real tailscaled.

One HTTP/1.1 request per Unix-socket connection (h11, sans-IO), JSON bodies in tailscaled's
shapes (engine.localapi.schema). watch_ipn_bus() yields ipn.Notify objects from the
newline-delimited stream; a line longer than MAX_LINE_BYTES ends the stream with an error.

Errors: HelperNotRunning (nothing listening / no socket), AccessDenied (403),
LocalAPIError (any other non-success status; `.status`, `.message`), UntrustedHelper (a request
that must only reach a helper run by root, such as set_keys, found someone else on the socket:
checked on the very connection, by SO_PEERCRED and the socket file's owner, before anything is sent).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import struct
import urllib.parse
from typing import Any, AsyncIterator

import h11

from engine.localapi.schema import (
    CAPABILITY_VERSION,
    LOCALAPI_HOST,
    DNSOSConfig,
    DNSQueryResponse,
    KeysInfo,
    MaskedPrefs,
    Notify,
    NotifyWatchOpt,
    Options,
    PingResult,
    Prefs,
    SetKeysRequest,
    Status,
    WhoIsResponse,
)

DEFAULT_SOCKET = "/run/meshvpn/meshvpn.sock"
MAX_RESPONSE_BYTES = 64 << 20
MAX_LINE_BYTES = 16 << 20
_CHUNK = 64 * 1024


def default_socket() -> str:
    return os.environ.get("MESHVPN_SOCKET", DEFAULT_SOCKET)


class LocalAPIError(Exception):
    """The helper answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class AccessDenied(LocalAPIError):
    """403: the caller may not do this (not root / not the operator)."""


class HelperNotRunning(ConnectionError):
    """Nobody is listening on the socket."""


class UntrustedHelper(LocalAPIError):
    """The socket is served (or owned) by a uid not trusted with this request; nothing was sent."""


ROOT_ONLY = frozenset({0})  # the uids trusted with private keys by default: root's helper only
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_peer(sock: socket.socket, socket_path: str, trusted_uids: frozenset[int]) -> None:
    """Raise UntrustedHelper unless the process serving `sock` and the socket file both belong to a trusted uid."""
    try:
        _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        owner = os.stat(socket_path).st_uid
    except OSError as e:
        raise UntrustedHelper(0, f"cannot check who serves {socket_path}: {e.strerror}") from None
    for what, u in (("the program answering on", uid), ("the socket file", owner)):
        if u not in trusted_uids:
            whom = " or ".join("root" if t == 0 else _user(t) for t in sorted(trusted_uids))
            raise UntrustedHelper(
                0, f"{what} {socket_path} belongs to {_user(u)}, not to {whom}: it is not the meshvpn helper"
            )


def _error_message(body: bytes) -> str:
    try:
        d = json.loads(body)
        if isinstance(d, dict):
            for k in ("Error", "error"):
                if isinstance(d.get(k), str) and d[k]:
                    return d[k]
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip()


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers


class LocalClient:
    """Async client for one LocalAPI socket."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout

    # ---------------------------------------------------------------- transport

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.open_unix_connection(self.socket_path, limit=_CHUNK)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise HelperNotRunning(
                f"the meshvpn helper is not running (cannot connect to {self.socket_path}: {e.strerror})"
            ) from e
        except PermissionError as e:
            raise HelperNotRunning(f"cannot connect to {self.socket_path}: permission denied") from e

    async def _request_stream(
        self,
        method: str,
        path: str,
        body: bytes | None,
        trusted_uids: frozenset[int] | None = None,
    ) -> tuple[_Response, h11.Connection, asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._open()
        if trusted_uids is not None:
            try:
                check_peer(writer.get_extra_info("socket"), self.socket_path, trusted_uids)
            except UntrustedHelper:
                writer.close()
                raise
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", LOCALAPI_HOST), ("Tailscale-Cap", str(CAPABILITY_VERSION)), ("Connection", "close")]
        if body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        try:
            writer.write(conn.send(h11.Request(method=method, target=path, headers=headers)))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            try:
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                # The server may answer (e.g. 403 to a non-operator) and close before
                # reading our body: its answer is still in our receive buffer.
                pass
            while True:
                ev = await self._next_event(conn, reader)
                if isinstance(ev, h11.Response):
                    hs = {k.decode().lower(): v.decode("latin-1") for k, v in ev.headers}
                    return _Response(ev.status_code, hs), conn, reader, writer
                if isinstance(ev, h11.ConnectionClosed):
                    raise LocalAPIError(0, "helper closed the connection without answering")
        except BaseException:
            writer.close()
            raise

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        """The next h11 event, reading from the socket (each read bounded by the timeout) while h11 needs data."""
        while True:
            ev = conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            async with asyncio.timeout(self.timeout):
                data = await reader.read(_CHUNK)
            conn.receive_data(data)

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            ev = await self._next_event(conn, reader)
            if isinstance(ev, h11.Data):
                body += ev.data
                if len(body) > MAX_RESPONSE_BYTES:
                    raise LocalAPIError(0, "response too large")
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return bytes(body)

    async def _do(
        self, method: str, path: str, body: Any = None, *, want: int = 200, trusted_uids: frozenset[int] | None = None
    ) -> bytes:
        raw = None
        if body is not None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp, conn, reader, writer = await self._request_stream(method, path, raw, trusted_uids)
        try:
            data = await self._read_body(conn, reader)
        except h11.RemoteProtocolError as e:
            raise LocalAPIError(0, f"malformed response from helper: {e}") from e
        finally:
            writer.close()
        if resp.status == 403:
            raise AccessDenied(403, _error_message(data))
        if resp.status != want:
            raise LocalAPIError(resp.status, _error_message(data))
        return data

    async def _json(
        self, method: str, path: str, body: Any = None, *, want: int = 200, trusted_uids: frozenset[int] | None = None
    ) -> Any:
        data = await self._do(method, path, body, want=want, trusted_uids=trusted_uids)
        try:
            return json.loads(data)
        except ValueError as e:
            raise LocalAPIError(0, f"invalid JSON from helper: {e}") from e

    # ---------------------------------------------------------------- tailscaled-compatible API

    async def status(self, *, peers: bool = True) -> Status:
        return Status.from_dict(await self._json("GET", "/localapi/v0/status" + ("" if peers else "?peers=false")))

    async def prefs(self) -> Prefs:
        return Prefs.from_dict(await self._json("GET", "/localapi/v0/prefs"))

    async def edit_prefs(self, mp: MaskedPrefs) -> Prefs:
        return Prefs.from_dict(await self._json("PATCH", "/localapi/v0/prefs", mp.to_dict()))

    async def check_prefs(self, p: Prefs) -> str:
        """ "" if acceptable, else the reason."""
        d = await self._json("POST", "/localapi/v0/check-prefs", p.to_dict())
        return (d or {}).get("Error", "") if isinstance(d, dict) else ""

    async def start(self, opts: Options) -> None:
        await self._do("POST", "/localapi/v0/start", opts.to_dict(), want=204)

    async def login_interactive(self) -> None:
        await self._do("POST", "/localapi/v0/login-interactive", want=204)

    async def logout(self) -> None:
        await self._do("POST", "/localapi/v0/logout", want=204)

    async def ping(self, ip: str, ping_type: str = "disco", *, size: int = 0) -> PingResult:
        q = urllib.parse.urlencode({"ip": ip, "size": str(size), "type": ping_type})
        return PingResult.from_dict(await self._json("POST", "/localapi/v0/ping?" + q))

    async def whois(self, addr: str) -> WhoIsResponse | None:
        try:
            d = await self._json("GET", "/localapi/v0/whois?" + urllib.parse.urlencode({"addr": addr}))
        except LocalAPIError as e:
            if e.status == 404:
                return None
            raise
        return WhoIsResponse.from_dict(d)

    async def set_use_exit_node(self, on: bool) -> Prefs:
        return Prefs.from_dict(
            await self._json("POST", f"/localapi/v0/set-use-exit-node-enabled?enabled={'true' if on else 'false'}")
        )

    async def dns_os_config(self) -> DNSOSConfig:
        """GET dns-osconfig (root/operator): the OS DNS settings the helper applied."""
        return DNSOSConfig.from_dict(await self._json("GET", "/localapi/v0/dns-osconfig"))

    async def query_dns(self, name: str, query_type: str = "A") -> DNSQueryResponse:
        """GET dns-query (root/operator): `name` resolved through MagicDNS; .reply is the DNS message."""
        q = urllib.parse.urlencode({"name": name, "type": query_type})
        return DNSQueryResponse.from_dict(await self._json("GET", "/localapi/v0/dns-query?" + q))

    async def watch_ipn_bus(self, mask: NotifyWatchOpt | int = 0) -> AsyncIterator[Notify]:
        """Notify messages until the helper ends the stream (or the caller stops iterating)."""
        resp, conn, reader, writer = await self._request_stream(
            "GET", f"/localapi/v0/watch-ipn-bus?mask={int(mask)}", None
        )
        try:
            if resp.status != 200:
                data = await self._read_body(conn, reader)
                if resp.status == 403:
                    raise AccessDenied(403, _error_message(data))
                raise LocalAPIError(resp.status, _error_message(data))
            buf = bytearray()
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(_CHUNK)  # no timeout: a quiet bus is normal
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Data):
                    buf += ev.data
                    while True:
                        nl = buf.find(b"\n")
                        if nl < 0:
                            break
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        if line.strip():
                            yield Notify.from_json(line)
                    if len(buf) > MAX_LINE_BYTES:
                        raise LocalAPIError(0, "IPN bus line too long")
                elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return
        finally:
            writer.close()

    # ---------------------------------------------------------------- meshvpn extensions

    async def set_keys(
        self, machine_private: str, node_private: str, *, trusted_uids: frozenset[int] | None = None
    ) -> KeysInfo:
        """Hand private keys over; with `trusted_uids`, only to a helper run (and its socket owned) by one of them."""
        req = SetKeysRequest(machine_private=machine_private, node_private=node_private)
        return KeysInfo.from_dict(
            await self._json("POST", "/localapi/v0/meshvpn/keys", req.to_dict(), trusted_uids=trusted_uids)
        )

    async def keys(self) -> KeysInfo:
        return KeysInfo.from_dict(await self._json("GET", "/localapi/v0/meshvpn/keys"))

    async def netcheck(self) -> dict[str, Any]:
        return await self._json("GET", "/localapi/v0/meshvpn/netcheck")

    async def version(self) -> dict[str, Any]:
        return await self._json("GET", "/localapi/v0/meshvpn/version")

    async def debug_engine(self) -> dict[str, Any]:
        """Engine internals (control state, counters, filter drops, peers with paths); root only."""
        return await self._json("GET", "/localapi/v0/meshvpn/debug-engine")
