"""The LocalAPI server: HTTP/1.1 (h11, sans-IO) over a Unix socket, peer-credential auth per request.

Request path:  accept ─► SO_PEERCRED ─► h11 parse (limits) ─► CSRF/Host check ─► route table
               ─► permission (read/write) ─► handler ─► JSON reply | newline-delimited stream

- No TCP listener, ever. The socket is bound under umask 077, then chmod'ed so local users can
  connect; every request is authorized by the caller's uid/gid (engine.localapi.auth).
- A stale socket file is replaced only after a connect to it failed; a live one means another
  helper is running (SocketInUse). A non-socket at the path is never touched.
- Limits: header block 16 KiB, body 1 MiB (413), a whole request (head + body) within 10 s (408,
  however slowly it dribbles in), idle keep-alive 60 s, 64 connections of which one unprivileged
  uid may hold 16 and 12 are kept for root and the operator (engine.localapi.connlimit; 503).
  Malformed HTTP → 400, unknown endpoint → 404, wrong method → 405, bad JSON or query → 400;
  a bad request never stops the server. Counters: GET meshvpn/counters (W).
- Root-only prefs (OperatorUser) stay root-only on every path that changes prefs
  (engine.ipn.prefs_policy): 403.
- Endpoint names and JSON shapes follow tailscaled 1.90's LocalAPI so the real `tailscale` CLI can
  drive us; our own additions live under /localapi/v0/meshvpn/.

Endpoints (/localapi/v0/...; R = any local user, W = root/operator):
    status GET R (?peers=false)          prefs GET R / PATCH W (MaskedPrefs)   check-prefs POST W
    start POST W (ipn.Options) -> 204    login-interactive POST W -> 204       logout POST W -> 204
    watch-ipn-bus GET R (?mask=N, NDJSON ipn.Notify; W unless mask has NotifyNoPrivateKeys)
    ping POST R (?ip&type&size)          whois GET R (?addr)
    set-use-exit-node-enabled POST W (?enabled)        suggest-exit-node GET R        derpmap GET R
    check-ip-forwarding / check-udp-gro-forwarding / check-reverse-path-filtering GET R ({"Warning"})
    serve-config GET R (null)            shutdown POST root
    dns-osconfig GET W (apitype.DNSOSConfig)   dns-query GET W (?name&type -> apitype.DNSQueryResponse)
        (W as tailscaled: "for privacy reasons"; 400 bad name/type, 409 not running, 503 no MagicDNS, 504 timeout)
    meshvpn/keys GET R (public halves) / POST W ({"MachineKey","NodeKey"}: privkey:…)
    meshvpn/netcheck GET R               meshvpn/version GET R                  meshvpn/whoami GET R
    meshvpn/counters GET W ({"Counters", "Connections": {"Total", "ByUID"}})
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
import socket
import stat
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import h11

from engine.ipn.backend import BackendError, PrefsError
from engine.ipn.dnsquery import QueryError
from engine.ipn.engine_api import DNSUnavailable
from engine.ipn.local import Backend
from engine.ipn.prefs_policy import PrefsDenied, check_change
from engine.localapi.auth import Authorizer, Permit, peer_cred
from engine.localapi.connlimit import Admission, ConnLimits, Tier
from engine.localapi.schema import (
    CAPABILITY_VERSION,
    LOCALAPI_HOST,
    MaskedPrefs,
    NotifyWatchOpt,
    Options,
    Prefs,
    SchemaError,
    SetKeysRequest,
    State,
)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT = 10.0  # seconds for a whole request (head + body): from accept, or a kept-alive one's first byte
IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may sit idle between requests
MAX_CONNECTIONS = ConnLimits().total
LINGER_TIMEOUT = 1.0  # seconds a refused connection is read (and dropped) so that it gets our 503, not a reset
MAX_LINGERING = 64  # refused connections lingered at once; more are closed at once
REJECT_LOG_INTERVAL = 60.0  # seconds between log lines about one uid's refused connections
_READ_CHUNK = 64 * 1024
_MAX_UINT64 = (1 << 64) - 1


class SocketInUse(RuntimeError):
    """Another process is serving on the socket path."""


class SocketPathError(RuntimeError):
    """The socket path cannot be used (not a socket, bad directory)."""


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able, bytes, or None
    headers: list[tuple[str, str]] = field(default_factory=list)
    ctype: str | None = None  # overrides the content type picked from `body`


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    permit: Permit

    def json(self) -> Any:
        if not self.body.strip():
            raise HTTPError(400, "invalid JSON body: empty")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: JSON nested too deep
            raise HTTPError(400, f"invalid JSON body: {e}") from None


Stream = AsyncIterator[bytes]
Handler = Callable[[Request], Awaitable["Reply | Stream"]]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    handler: Handler
    write: bool  # needs write permission
    action: str  # for denial messages


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _json_bytes(v: Any, indent: bool = False) -> bytes:
    return (json.dumps(v, indent="\t" if indent else None) + "\n").encode()


# ---------------------------------------------------------------------- socket binding


def bind_unix_socket(path: str, *, mode: int = 0o666, dir_mode: int = 0o755) -> socket.socket:
    """Bind+listen on `path`, replacing a stale socket only after a failed connect."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=dir_mode, exist_ok=True)
        os.chmod(parent, dir_mode)
    pst = os.stat(parent)
    if pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX:
        raise SocketPathError(
            f"socket directory {parent} is world-writable without the sticky bit; anyone could replace the socket"
        )
    if os.path.lexists(path):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketPathError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody is listening
        except OSError as e:
            raise SocketPathError(f"cannot check existing socket {path}: {e.strerror}") from e
        else:
            raise SocketInUse(f"another helper is already serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(MAX_CONNECTIONS)
    sock.setblocking(False)
    return sock


# ---------------------------------------------------------------------- the server


class LocalAPIServer:
    """Serves the LocalAPI for one Backend on one Unix socket."""

    def __init__(
        self,
        backend: Backend,
        authorizer: Authorizer,
        socket_path: str,
        *,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        socket_mode: int = 0o666,
        max_body: int = MAX_BODY_BYTES,
        on_shutdown_request: Callable[[], None] | None = None,
        conn_limits: ConnLimits = ConnLimits(),
    ) -> None:
        self.backend = backend
        self.auth = authorizer
        self.socket_path = socket_path
        self.log = logger or logging.getLogger("meshvpn.localapi")
        self.socket_mode = socket_mode
        self.max_body = max_body
        self.on_shutdown_request = on_shutdown_request
        self._server: asyncio.base_events.Server | None = None
        self._inode: int | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.admission = Admission(conn_limits)
        self._lingering = 0
        self._reject_logged: dict[int, float] = {}  # uid -> loop time of the last "refused" log line
        self.counters = {
            "requests": 0,
            "bad_requests": 0,
            "bad_params": 0,
            "denied": 0,
            "denied_prefs": 0,
            "not_found": 0,
            "rejected_conns": 0,
            "rejected_conns_per_uid": 0,
            "rejected_conns_full": 0,
            "request_timeouts": 0,
        }
        self.routes: dict[str, Route] = self._build_routes()

    # -- lifecycle --

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("LocalAPIServer.start() called twice")
        sock = bind_unix_socket(self.socket_path, mode=self.socket_mode)
        self._inode = os.stat(self.socket_path).st_ino
        self._server = await asyncio.start_unix_server(self._on_conn, sock=sock, limit=_READ_CHUNK)
        self.log.info("LocalAPI listening on %s", self.socket_path)

    async def aclose(self) -> None:
        """Stop accepting, end open connections (watchers), remove our socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        try:
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self._inode = None

    async def __aenter__(self) -> "LocalAPIServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connections --

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            cred = peer_cred(writer.get_extra_info("socket"))
            permit = self.auth.permit(cred)
        except OSError as e:
            self.log.warning("LocalAPI: cannot read the caller's credentials: %s", e)
            await self._close(writer)
            return
        tier = Tier.ROOT if permit.is_root else Tier.OPERATOR if permit.write else Tier.USER
        why = self.admission.admit(cred.uid, tier)
        if why:
            self._conns.add(task)  # so that aclose() ends a lingering refusal too
            try:
                await self._refuse_conn(reader, writer, permit, cred.uid, why)
            except asyncio.CancelledError:
                pass  # see below
            finally:
                self._conns.discard(task)
                await self._close(writer)
            return
        self._conns.add(task)
        try:
            await self._serve_conn(reader, writer, permit)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # aclose() ends this connection: the task is the top of its own stack (nobody awaits it but
            # aclose's gather), so it ends normally; a cancelled handler task is logged as an error with a
            # traceback by the stream server's done callback on Python 3.11.
            pass
        except Exception:  # noqa: BLE001 - one broken connection must not affect others
            self.log.exception("LocalAPI connection failed")
        finally:
            self._conns.discard(task)
            self.admission.release(cred.uid)
            await self._close(writer)

    async def _refuse_conn(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, permit: Permit, uid: int, why: str
    ) -> None:
        """503 to a connection over its caller's cap (or the total's unreserved part), counted; the caller closes."""
        self.counters["rejected_conns"] += 1
        self.counters[f"rejected_conns_{why}"] += 1
        if why == "per_uid":
            msg = (
                f"too many connections from {permit.who}: at most {self.admission.limits.per_uid} at once; "
                "close some (watch streams) and retry"
            )
        else:
            msg = "the LocalAPI is busy (too many connections); retry later"
        now = asyncio.get_running_loop().time()
        if now - self._reject_logged.get(uid, -REJECT_LOG_INTERVAL) >= REJECT_LOG_INTERVAL:
            self._reject_logged[uid] = now
            self.log.warning("refusing connections: %s (%d refused so far)", msg, self.counters["rejected_conns"])
        body = _json_bytes({"Error": msg})
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        if self._lingering < MAX_LINGERING:
            # Closing with the client's request unread would reset the connection and lose our answer:
            # end our side, read (and drop) what the client sends for a moment, then close.
            self._lingering += 1
            try:
                writer.write_eof()
                async with asyncio.timeout(LINGER_TIMEOUT):
                    while await reader.read(_READ_CHUNK):
                        pass
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                self._lingering -= 1

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (ConnectionError, asyncio.TimeoutError, OSError):
            pass

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float) -> Any:
        """The next h11 event; TimeoutError at `deadline` (loop time), however the bytes trickle in."""
        while True:
            ev = conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            async with asyncio.timeout_at(deadline):
                data = await reader.read(_READ_CHUNK)
            conn.receive_data(data)

    async def _await_next_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bool:
        """Keep-alive: wait up to IDLE_TIMEOUT for the next request's first bytes (False: idle too long)."""
        if conn.trailing_data[0] or conn.trailing_data[1]:
            return True
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                data = await reader.read(_READ_CHUNK)
        except asyncio.TimeoutError:
            return False
        conn.receive_data(data)
        return True

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, permit: Permit) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        loop = asyncio.get_running_loop()
        first = True
        while True:
            if not first and not await self._await_next_request(conn, reader):
                return
            deadline = loop.time() + REQUEST_TIMEOUT  # the whole request: head and body
            try:
                ev = await self._next_event(conn, reader, deadline)
            except asyncio.TimeoutError:
                self.counters["request_timeouts"] += 1
                await self._send_error_raw(conn, writer, 408, f"request not received within {REQUEST_TIMEOUT:g} s")
                return
            except h11.RemoteProtocolError as e:
                self.counters["bad_requests"] += 1
                await self._send_error_raw(conn, writer, e.error_status_hint or 400, f"malformed HTTP request: {e}")
                return
            first = False
            if isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                return
            if not isinstance(ev, h11.Request):
                return
            self.counters["requests"] += 1
            if len(ev.target) + sum(len(k) + len(v) + 4 for k, v in ev.headers) > MAX_HEADER_BYTES:
                # h11 only bounds an *incomplete* head; bound a complete one too.
                self.counters["bad_requests"] += 1
                await self._send_error_raw(conn, writer, 431, f"request head larger than {MAX_HEADER_BYTES} bytes")
                return
            try:
                req = await self._read_request(conn, reader, ev, permit, deadline)
                result = await self._dispatch(req)
            except HTTPError as e:
                if e.status == 400:
                    self.counters["bad_requests"] += 1
                result = Reply(e.status, {"Error": e.message})
            except h11.RemoteProtocolError as e:
                self.counters["bad_requests"] += 1
                await self._send_error_raw(conn, writer, 400, f"malformed HTTP request: {e}")
                return
            except asyncio.TimeoutError:
                self.counters["request_timeouts"] += 1
                await self._send_error_raw(conn, writer, 408, f"request not received within {REQUEST_TIMEOUT:g} s")
                return
            self.log.debug(
                "%s %s -> %s (%s)",
                ev.method.decode("ascii", "replace"),
                ev.target.decode("latin-1").split("?")[0],
                result.status if isinstance(result, Reply) else "stream",
                permit.who,
            )
            if isinstance(result, Reply):
                await self._send_reply(conn, writer, result)
            else:
                await self._send_stream(conn, reader, writer, result)
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, ev: h11.Request, permit: Permit, deadline: float
    ) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in ev.headers}
        target = ev.target.decode("latin-1")
        try:
            parsed = urllib.parse.urlsplit(target)
        except ValueError:  # e.g. "//[]/": urlsplit checks a bracketed host
            raise HTTPError(400, "invalid request target") from None
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        clen = headers.get("content-length")
        if clen is not None and clen.isdigit() and int(clen) > self.max_body:
            raise HTTPError(413, f"request body too large: {clen} bytes (limit {self.max_body})")
        body = bytearray()
        while True:
            part = await self._next_event(conn, reader, deadline)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.max_body:
                    raise HTTPError(413, f"request body too large (limit {self.max_body} bytes)")
            elif isinstance(part, h11.EndOfMessage):
                break
            elif isinstance(part, h11.ConnectionClosed):
                raise ConnectionResetError("client closed mid-request")
        return Request(ev.method.decode("ascii", "replace").upper(), parsed.path, query, headers, bytes(body), permit)

    async def _dispatch(self, req: Request) -> "Reply | Stream":
        host = req.headers.get("host", "")
        if req.headers.get("referer") or req.headers.get("origin") or host not in ("", LOCALAPI_HOST):
            self.counters["denied"] += 1
            raise HTTPError(403, "invalid localapi request (browser-originated or wrong Host)")
        if not req.path.startswith("/localapi/v0/"):
            self.counters["not_found"] += 1
            raise HTTPError(404, f"no such endpoint {req.path}")
        route = self.routes.get(req.path[len("/localapi/v0/") :])
        if route is None:
            self.counters["not_found"] += 1
            raise HTTPError(404, f"no such endpoint {req.path}")
        if req.method not in route.methods:
            raise HTTPError(
                405, f"method {req.method} not allowed on {req.path}; want {'/'.join(sorted(route.methods))}"
            )
        write = route.write or (req.method == "PATCH")
        if write and not req.permit.write:
            self.counters["denied"] += 1
            self.log.warning("denied %s %s for %s", req.method, req.path, req.permit.who)
            raise HTTPError(403, self.auth.denial(req.permit, route.action))
        if not req.permit.read:
            self.counters["denied"] += 1
            raise HTTPError(403, f"{route.action} denied for {req.permit.who}")
        try:
            return await route.handler(req)
        except PrefsDenied as e:
            self.counters["denied"] += 1
            self.counters["denied_prefs"] += 1
            self.log.warning("denied %s %s for %s: %s", req.method, req.path, req.permit.who, e)
            raise HTTPError(403, str(e)) from None
        except PrefsError as e:
            raise HTTPError(400, str(e)) from None
        except SchemaError as e:
            raise HTTPError(400, f"invalid request: {e}") from None
        except BackendError as e:
            raise HTTPError(409, str(e)) from None

    # -- writing --

    def _headers(self, extra: list[tuple[str, str]], ctype: str | None, length: int | None) -> list[tuple[str, str]]:
        h = [
            ("Tailscale-Cap", str(CAPABILITY_VERSION)),
            ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if ctype:
            h.append(("Content-Type", ctype))
        if length is not None:
            h.append(("Content-Length", str(length)))
        return h + extra

    async def _send_reply(self, conn: h11.Connection, writer: asyncio.StreamWriter, r: Reply) -> None:
        if r.body is None:
            body, ctype = b"", None
        elif isinstance(r.body, bytes):
            body, ctype = r.body, "text/plain; charset=utf-8"
        else:
            body, ctype = _json_bytes(r.body, indent=True), "application/json"
        if r.ctype:
            ctype = r.ctype
        if r.status == 204:
            body, ctype = b"", None
        resp = h11.Response(
            status_code=r.status,
            reason=_reason(r.status),
            headers=self._headers(r.headers, ctype, len(body) if r.status != 204 else None),
        )
        try:
            writer.write(conn.send(resp))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return
        await writer.drain()

    async def _send_error_raw(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, msg: str) -> None:
        """Answer a request h11 could not parse (if the connection state still allows a response)."""
        body = _json_bytes({"Error": msg})
        try:
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            data = conn.send(
                h11.Response(
                    status_code=status,
                    reason=_reason(status),
                    headers=self._headers([("Connection", "close")], "application/json", len(body)),
                )
            )
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11 is in ERROR; write a minimal response by hand.
            data = (
                f"HTTP/1.1 {status} {_reason(status).decode()}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def _send_stream(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: Stream
    ) -> None:
        """Chunked response of newline-delimited JSON, until the producer ends or the client hangs up."""
        writer.write(
            conn.send(h11.Response(status_code=200, reason=b"OK", headers=self._headers([], "application/json", None)))
        )
        await writer.drain()

        async def pump() -> None:
            async for chunk in chunks:
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()

        async def hangup(pump_task: asyncio.Task[None]) -> None:
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    pump_task.cancel()
                    return

        try:
            async with asyncio.TaskGroup() as tg:
                p = tg.create_task(pump())
                h = tg.create_task(hangup(p))
                try:
                    await p
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                h.cancel()
        except* (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- routes --

    def _build_routes(self) -> dict[str, Route]:
        G, P, PA, PO = (
            frozenset({"GET", "HEAD"}),
            frozenset({"POST"}),
            frozenset({"GET", "PATCH"}),
            frozenset({"GET", "POST"}),
        )
        return {
            "status": Route(G, self.h_status, False, "status"),
            "prefs": Route(PA, self.h_prefs, False, "prefs change"),
            "check-prefs": Route(P, self.h_check_prefs, True, "check-prefs"),
            "start": Route(P, self.h_start, True, "start"),
            "login-interactive": Route(P, self.h_login_interactive, True, "login"),
            "logout": Route(P, self.h_logout, True, "logout"),
            "watch-ipn-bus": Route(G, self.h_watch, False, "watch"),
            "ping": Route(P, self.h_ping, False, "ping"),
            "whois": Route(G, self.h_whois, False, "whois"),
            "set-use-exit-node-enabled": Route(P, self.h_use_exit_node, True, "exit node change"),
            "suggest-exit-node": Route(G, self.h_suggest_exit_node, False, "suggest-exit-node"),
            "check-ip-forwarding": Route(G, self.h_check_ip_forwarding, False, "check"),
            "check-udp-gro-forwarding": Route(G, self.h_no_warning, False, "check"),
            "check-reverse-path-filtering": Route(G, self.h_check_rp_filter, False, "check"),
            "derpmap": Route(G, self.h_derpmap, False, "derpmap"),
            "shutdown": Route(P, self.h_shutdown, True, "shutdown"),
            "serve-config": Route(G, self.h_serve_config, False, "serve-config"),
            "dns-osconfig": Route(frozenset({"GET"}), self.h_dns_osconfig, True, "dns-osconfig dump"),
            "dns-query": Route(frozenset({"GET"}), self.h_dns_query, True, "dns-query"),
            "meshvpn/keys": Route(PO, self.h_keys, False, "setting keys"),
            "meshvpn/netcheck": Route(G, self.h_netcheck, False, "netcheck"),
            "meshvpn/version": Route(G, self.h_version, False, "version"),
            "meshvpn/whoami": Route(G, self.h_whoami, False, "whoami"),
            "meshvpn/counters": Route(G, self.h_counters, True, "reading counters"),
            "meshvpn/debug-engine": Route(G, self.h_debug_engine, True, "reading engine internals"),
        }

    async def h_status(self, req: Request) -> Reply:
        peers = req.query.get("peers", "true").lower() not in ("false", "0")
        return Reply(200, self.backend.status(peers=peers).to_dict())

    async def h_prefs(self, req: Request) -> Reply:
        if req.method == "PATCH":
            mp = MaskedPrefs.from_dict(req.json())
            prefs = await self.backend.edit_prefs(mp, actor_is_root=req.permit.is_root, who=req.permit.who)
            return Reply(200, prefs.to_dict())
        return Reply(200, self.backend.prefs.to_dict())

    async def h_check_prefs(self, req: Request) -> Reply:
        p = Prefs.from_dict(req.json())
        try:
            check_change(self.backend.prefs, p, actor_is_root=req.permit.is_root, who=req.permit.who)
            self.backend.check_prefs(p)
        except PrefsError as e:
            return Reply(200, {"Error": str(e)})
        return Reply(200, {})

    async def h_start(self, req: Request) -> Reply:
        o = Options.from_dict(req.json())
        await self.backend.start_with(
            update_prefs=o.update_prefs, auth_key=o.auth_key, actor_is_root=req.permit.is_root, who=req.permit.who
        )
        return Reply(204)

    async def h_login_interactive(self, req: Request) -> Reply:
        await self.backend.login_interactive()
        return Reply(204)

    async def h_logout(self, req: Request) -> Reply:
        await self.backend.logout()
        return Reply(204)

    async def h_watch(self, req: Request) -> Stream:
        known = (1 << 11) - 1  # NotifyWatchOpt bits we know; others are ignored, as tailscaled does
        mask = NotifyWatchOpt(self._uint_param(req, "mask", "ipn.NotifyWatchOpt bits") & known)
        if not mask & NotifyWatchOpt.NO_PRIVATE_KEYS and not req.permit.write:
            # tailscaled's rule: readers must ask for private keys to be filtered out.
            self.counters["denied"] += 1
            raise HTTPError(
                403,
                "watch IPN bus access denied, must set ipn.NotifyNoPrivateKeys when not "
                "running as admin/root or operator",
            )
        events = self.backend.watch(mask, uid=req.permit.uid)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for n in events:
                    yield (n.to_json() + "\n").encode()
            finally:
                await events.aclose()

        return lines()

    async def h_ping(self, req: Request) -> Reply:
        ip = req.query.get("ip", "")
        if not ip:
            raise HTTPError(400, "missing 'ip' parameter")
        kind = req.query.get("type", "")
        if not kind:
            raise HTTPError(400, "missing 'type' parameter")
        size = self._uint_param(req, "size", "bytes", maximum=1 << 16)
        try:
            res = await self.backend.ping(ip, kind, size)
        except ValueError:
            raise HTTPError(400, "invalid IP") from None
        return Reply(200, res.to_dict())

    async def h_whois(self, req: Request) -> Reply:
        addr = req.query.get("addr", "")
        if not addr:
            raise HTTPError(400, "missing 'addr' parameter")
        try:
            res = self.backend.whois(addr)
        except ValueError:
            raise HTTPError(400, "invalid 'addr' parameter") from None
        if res is None:
            raise HTTPError(404, "no match for IP:port")
        return Reply(200, res.to_dict())

    async def h_use_exit_node(self, req: Request) -> Reply:
        v = req.query.get("enabled", "").lower()
        if v not in ("true", "false", "1", "0"):
            raise HTTPError(400, "invalid 'enabled' parameter")
        prefs = await self.backend.set_use_exit_node(
            v in ("true", "1"), actor_is_root=req.permit.is_root, who=req.permit.who
        )
        return Reply(200, prefs.to_dict())

    async def h_suggest_exit_node(self, req: Request) -> Reply:
        st = self.backend.status()
        for ps in st.peers():
            if ps.exit_node_option and ps.online:
                return Reply(200, {"ID": ps.id, "Name": ps.dns_name.split(".")[0]})
        raise HTTPError(404, "no exit node available")

    async def h_check_ip_forwarding(self, req: Request) -> Reply:
        warning = ""
        if self.backend.prefs.advertise_routes:
            try:
                with open("/proc/sys/net/ipv4/ip_forward") as f:
                    if f.read().strip() != "1":
                        warning = "IP forwarding is disabled; subnet routes and exit node traffic will not be forwarded"
            except OSError:
                pass
        return Reply(200, {"Warning": warning})

    async def h_check_rp_filter(self, req: Request) -> Reply:
        return Reply(200, {"Warning": ""})

    async def h_no_warning(self, req: Request) -> Reply:
        return Reply(200, {"Warning": ""})

    async def h_derpmap(self, req: Request) -> Reply:
        nm = self.backend.netmap
        if nm is not None and nm.derp_map:
            return Reply(200, nm.derp_map)
        regions = {
            str(i): {"RegionID": i, "RegionCode": code, "RegionName": code, "Nodes": []}
            for i, code in (nm.derp_regions.items() if nm else [])
        }
        return Reply(200, {"Regions": regions})

    async def h_serve_config(self, req: Request) -> Reply:
        """Serve/Funnel is not supported: an empty config (JSON null), as tailscaled sends when unset."""
        return Reply(200, b"null\n", ctype="application/json")

    async def h_shutdown(self, req: Request) -> Reply:
        if not req.permit.is_root:
            raise HTTPError(403, "shutdown is for root only")
        if self.on_shutdown_request is None:
            raise HTTPError(501, "shutdown is not available")
        self.on_shutdown_request()
        return Reply(200, {})

    async def h_debug_engine(self, req: Request) -> Reply:
        if not req.permit.is_root:
            self.counters["denied"] += 1
            raise HTTPError(403, "engine internals are for root only")
        return Reply(200, self.backend.debug_engine())

    async def h_keys(self, req: Request) -> Reply:
        if req.method == "GET":
            return Reply(200, self.backend.keys_info().to_dict())
        if not req.permit.write:
            self.counters["denied"] += 1
            raise HTTPError(403, self.auth.denial(req.permit, "setting keys"))
        keys = SetKeysRequest.from_dict(req.json())
        return Reply(200, self.backend.set_keys(keys, owner_uid=req.permit.uid).to_dict())

    async def h_netcheck(self, req: Request) -> Reply:
        if self.backend.state not in (State.RUNNING, State.STARTING):
            raise HTTPError(409, f"netcheck needs a running connection (state {self.backend.state.go_name})")
        try:
            async with asyncio.timeout(30.0):
                report = await self.backend.netcheck()
        except NotImplementedError:
            raise HTTPError(501, "netcheck is not implemented by this engine") from None
        except asyncio.TimeoutError:
            raise HTTPError(504, "netcheck timed out") from None
        return Reply(200, report)

    async def h_dns_osconfig(self, req: Request) -> Reply:
        try:
            return Reply(200, self.backend.dns_os_config().to_dict())
        except DNSUnavailable as e:
            raise HTTPError(503, str(e)) from None

    async def h_dns_query(self, req: Request) -> Reply:
        if "name" not in req.query:
            raise HTTPError(400, "missing 'name' parameter")
        try:
            res = await self.backend.dns_query(req.query["name"], req.query.get("type", ""))
        except QueryError as e:
            raise HTTPError(400, str(e)) from None
        except DNSUnavailable as e:
            raise HTTPError(503, str(e)) from None
        except asyncio.TimeoutError:
            raise HTTPError(504, "DNS query timed out") from None
        return Reply(200, res.to_dict())

    async def h_version(self, req: Request) -> Reply:
        return Reply(200, {"Version": self.backend.version, "CapabilityVersion": CAPABILITY_VERSION})

    async def h_counters(self, req: Request) -> Reply:
        adm = self.admission
        return Reply(
            200,
            {
                "Counters": dict(self.counters),
                "Connections": {"Total": adm.total, "ByUID": {str(u): n for u, n in adm.by_uid.items()}},
            },
        )

    def _uint_param(self, req: Request, name: str, what: str, *, maximum: int = _MAX_UINT64) -> int:
        """An unsigned decimal query parameter (absent/empty: 0); anything else is a counted 400."""
        raw = req.query.get(name, "") or "0"
        ok = raw.isascii() and raw.isdigit() and len(raw) <= 20 and int(raw) <= maximum
        if not ok:
            self.counters["bad_params"] += 1
            shown = raw if len(raw) <= 24 else raw[:24] + "..."
            raise HTTPError(
                400, f"invalid {name!r} parameter {shown!r}: want a decimal number from 0 to {maximum} ({what})"
            )
        return int(raw)

    async def h_whoami(self, req: Request) -> Reply:
        return Reply(200, {"Who": req.permit.who, "Read": req.permit.read, "Write": req.permit.write})
