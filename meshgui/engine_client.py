"""Async LocalAPI access for the GUI (no Qt): typed requests and a framed watch() iterator over the helper's socket.

Uses `engine.localapi.client` when it is importable; until then (and as the reference
behaviour), a minimal HTTP/1.1-over-Unix-socket transport speaking tailscaled's LocalAPI:
Host `local-tailscaled.sock`, JSON bodies, `watch-ipn-bus` as newline-delimited JSON with
a maximum line length (STYLE R18: never treat one read chunk as one message).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any, AsyncIterator, Mapping

LOCALAPI_HOST = "local-tailscaled.sock"
MAX_LINE = 64 * 1024 * 1024  # one Notify with a NetMap of thousands of peers stays far below this
MAX_BODY = 64 * 1024 * 1024
REQUEST_TIMEOUT = 30.0  # seconds, for one-shot requests (not the watch stream)

# ipn.NotifyWatchOpt bits (ipn/backend.go) understood by tailscaled 1.90 and our helper.
WATCH_ENGINE_UPDATES = 1 << 0
WATCH_INITIAL_STATE = 1 << 1
WATCH_INITIAL_PREFS = 1 << 2
WATCH_INITIAL_NETMAP = 1 << 3
WATCH_NO_PRIVATE_KEYS = 1 << 4
WATCH_INITIAL_HEALTH = 1 << 7
WATCH_RATE_LIMIT = 1 << 8
GUI_WATCH_MASK = (WATCH_ENGINE_UPDATES | WATCH_INITIAL_STATE | WATCH_INITIAL_PREFS
                  | WATCH_INITIAL_NETMAP | WATCH_NO_PRIVATE_KEYS | WATCH_RATE_LIMIT)

# Namespaced extension endpoint (ours, not tailscaled's) through which the GUI hands the
# keyring-held private keys to the helper. Owned by engine/localapi.
KEYS_PATH = "/localapi/v0/meshvpn/keys"


class LocalAPIError(Exception):
    """The LocalAPI answered with an unexpected HTTP status."""

    def __init__(self, status: int, body: str, path: str) -> None:
        super().__init__(f"{path}: HTTP {status}: {body.strip()[:200]}")
        self.status = status
        self.body = body
        self.path = path


class AccessDenied(LocalAPIError):
    """HTTP 403: this user may read but not control the helper."""


class HelperUnavailable(Exception):
    """The helper's socket could not be reached."""


class EngineClient:
    """The LocalAPI calls the GUI makes; one short connection per request, one long one per watch."""

    def __init__(self, socket_path: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    # ------------------------------------------------------------ requests

    async def status(self) -> dict[str, Any]:
        return await self._json("GET", "/localapi/v0/status")

    async def get_prefs(self) -> dict[str, Any]:
        return await self._json("GET", "/localapi/v0/prefs")

    async def edit_prefs(self, masked: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH ipn.MaskedPrefs: each changed field needs its `<Field>Set: true` companion."""
        return await self._json("PATCH", "/localapi/v0/prefs", masked)

    async def start(self, options: Mapping[str, Any] | None = None) -> None:
        await self._request("POST", "/localapi/v0/start", options or {}, ok=(200, 204))

    async def login_interactive(self) -> None:
        await self._request("POST", "/localapi/v0/login-interactive", None, ok=(200, 204))

    async def logout(self) -> None:
        await self._request("POST", "/localapi/v0/logout", None, ok=(200, 204))

    async def ping(self, ip: str, ping_type: str = "disco") -> dict[str, Any]:
        q = urllib.parse.urlencode({"ip": ip, "type": ping_type, "size": 0})
        return await self._json("POST", f"/localapi/v0/ping?{q}")

    async def whois(self, addr: str) -> dict[str, Any]:
        return await self._json("GET", "/localapi/v0/whois?" + urllib.parse.urlencode({"addr": addr}))

    async def set_keys(self, payload: Mapping[str, Any]) -> None:
        """Hand keys to the helper (POST /localapi/v0/meshvpn/keys); the body is never logged."""
        await self._request("POST", KEYS_PATH, payload, ok=(200, 204))

    async def watch(self, mask: int = GUI_WATCH_MASK) -> AsyncIterator[dict[str, Any]]:
        """Yield ipn.Notify objects until the helper closes the stream."""
        reader, writer = await self._open()
        try:
            writer.write(_request_bytes("GET", f"/localapi/v0/watch-ipn-bus?mask={mask}", None))
            await writer.drain()
            status, headers = await asyncio.wait_for(_read_head(reader), self.timeout)
            if status != 200:
                body = await _read_body(reader, headers)
                raise _error(status, body, "/localapi/v0/watch-ipn-bus")
            async for line in _iter_lines(_body_chunks(reader, headers)):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # a broken line is dropped, the stream goes on
                if isinstance(obj, dict):
                    yield obj
        finally:
            writer.close()

    # ------------------------------------------------------------ transport

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise HelperUnavailable(f"cannot reach the helper at {self.socket_path}: {e}") from e

    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        text = await self._request(method, path, body, ok=(200,))
        try:
            obj = json.loads(text) if text.strip() else {}
        except ValueError as e:
            raise LocalAPIError(200, "invalid JSON from helper", path) from e
        return obj if isinstance(obj, dict) else {"value": obj}

    async def _request(self, method: str, path: str, body: Any, *, ok: tuple[int, ...]) -> str:
        reader, writer = await self._open()
        try:
            writer.write(_request_bytes(method, path, body))
            await writer.drain()

            async def exchange() -> tuple[int, bytes]:
                status, headers = await _read_head(reader)
                return status, await _read_body(reader, headers)

            try:
                status, data = await asyncio.wait_for(exchange(), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                raise HelperUnavailable(f"helper closed the connection during {path}") from e
        finally:
            writer.close()
        text = data.decode("utf-8", "replace")
        if status not in ok:
            raise _error(status, text, path)
        return text


def _error(status: int, body: str, path: str) -> LocalAPIError:
    return (AccessDenied if status == 403 else LocalAPIError)(status, body, path)


def _request_bytes(method: str, path: str, body: Any) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {LOCALAPI_HOST}", "Connection: close",
            "User-Agent: meshgui"]
    if body is not None:
        head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise HelperUnavailable("helper closed the connection")
    parts = line.decode("latin-1").split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError) as e:
        raise HelperUnavailable(f"malformed HTTP status line from helper: {line[:80]!r}") from e
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                return
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readline()  # CRLF after each chunk
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        if remaining > MAX_BODY:
            raise HelperUnavailable("helper response too large")
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                return
            remaining -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    out = bytearray()
    async for chunk in _body_chunks(reader, headers):
        out += chunk
        if len(out) > MAX_BODY:
            raise HelperUnavailable("helper response too large")
    return bytes(out)


async def _iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Reframe arbitrary chunks into lines; a line longer than MAX_LINE is dropped, not buffered."""
    buf = bytearray()
    skipping = False
    async for chunk in chunks:
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            if skipping:
                skipping = False
                continue
            yield line
        if len(buf) > MAX_LINE:
            buf.clear()
            skipping = True
    if buf and not skipping:
        yield bytes(buf)
