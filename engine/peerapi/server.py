"""Asyncio HTTP/1.1 adapter (h11) serving a PeerAPICore on our tailnet addresses.

    async with PeerAPIServer(core, answer_dns) as srv:     # nothing bound yet
        ports = srv.set_addresses(["100.64.0.1", "fd7a:115c:a1e0::1"])   # on every netmap; rebinds changes
    # on exit: listeners and connections closed

Per connection: read one request (head + body within the limits), let the core decide, ask the
resolver when it returns a DNSQuery, send the response, and keep the connection for the next
request (HTTP/1.1 keep-alive) until the client closes, an idle timeout, or an error. Malformed
HTTP gets 400/413/431 and a close; every failure is counted in core.counters and none escapes.
Listeners bind with IP_FREEBIND, so they need not wait for the address to appear on the TUN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable

import h11

from engine.net.freebind import bound_socket
from engine.peerapi.core import MAX_DNS_QUERY_BYTES, DNSAnswer, DNSQuery, PeerAPICore, Request, Response
from engine.peerapi.ports import candidate_ports

RECV_CHUNK = 65536
LISTEN_BACKLOG = 128

AnswerDNS = Callable[[bytes], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Limits:
    """Resource limits of the HTTP server (seconds, bytes, counts)."""

    max_connections: int = 64
    max_connections_per_peer: int = 16
    idle_timeout: float = 120.0  # between requests; longer than Go's client idle (90 s), so the client closes first
    request_timeout: float = 10.0  # from the first byte of a request to its end (slow clients)
    write_timeout: float = 10.0
    dns_timeout: float = 5.0  # longer than typical DNS client timeouts, short enough for a human
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = MAX_DNS_QUERY_BYTES


class _Listener:
    def __init__(self, ip: str, sock: socket.socket) -> None:
        self.ip = ip
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.task: asyncio.Task | None = None
        self.conns: set[asyncio.Task] = set()


class PeerAPIServer:
    """See module docstring. ``answer_dns(query) -> reply | None`` is the MagicDNS resolver."""

    def __init__(
        self,
        core: PeerAPICore,
        answer_dns: AnswerDNS | None,
        *,
        limits: Limits = Limits(),
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        ports_for: Callable[[str], list[int]] = candidate_ports,
    ) -> None:
        self.core = core
        self._answer_dns = answer_dns
        self.limits = limits
        self._log = logger or logging.getLogger("meshvpn.peerapi")
        self._ports_for = ports_for
        self._listeners: dict[str, _Listener] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._per_peer: dict[str, int] = {}
        self._nconns = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> "PeerAPIServer":
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        for ip in list(self._listeners):
            self._close_listener(ip)
        tg, self._tg = self._tg, None
        if tg is not None:
            with contextlib.suppress(BaseException):
                await tg.__aexit__(None, None, None)

    @property
    def ports(self) -> dict[str, int]:
        """Our address -> peerAPI port, for the listeners that are up."""
        return {ip: ln.port for ip, ln in self._listeners.items()}

    def set_addresses(self, ips: list[str]) -> dict[str, int]:
        """Listen on exactly ``ips`` (rebinding only what changed); returns ``ports``. Call on the loop thread."""
        if self._tg is None:
            raise RuntimeError("PeerAPIServer: use `async with` before set_addresses()")
        want = list(dict.fromkeys(ips))
        for ip in list(self._listeners):
            if ip not in want:
                self._close_listener(ip)
        for ip in want:
            if ip in self._listeners:
                continue
            try:
                sock = self._bind(ip)
            except OSError as e:
                self._log.error("peerapi: cannot listen on %s: %s", ip, e)
                continue
            ln = _Listener(ip, sock)
            ln.task = self._tg.create_task(self._accept_loop(ln))
            self._listeners[ip] = ln
            self._log.info("peerapi: serving on http://%s", f"[{ip}]:{ln.port}" if ":" in ip else f"{ip}:{ln.port}")
        return self.ports

    def _bind(self, ip: str) -> socket.socket:
        last: OSError | None = None
        for port in [*self._ports_for(ip), 0]:
            try:
                return _listen_socket(ip, port)
            except OSError as e:
                last = e
        raise last or OSError("no port")

    def _close_listener(self, ip: str) -> None:
        ln = self._listeners.pop(ip, None)
        if ln is None:
            return
        if ln.task is not None:
            ln.task.cancel()
        for t in list(ln.conns):
            t.cancel()
        ln.sock.close()
        self._log.info("peerapi: stopped serving on %s", ip)

    # -- accepting ------------------------------------------------------------------------
    async def _accept_loop(self, ln: _Listener) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(ln.sock)
            except asyncio.CancelledError:
                raise
            except OSError as e:
                self._log.debug("peerapi: accept on %s: %s", ln.ip, e)
                await asyncio.sleep(0.1)  # e.g. EMFILE: do not spin
                continue
            remote = addr[0]
            if not self.core.accept_connection(remote):
                self._log.debug("peerapi: connection from unknown address %s closed", remote)
                conn.close()
                continue
            if (
                self._nconns >= self.limits.max_connections
                or self._per_peer.get(remote, 0) >= self.limits.max_connections_per_peer
            ):
                self.core.counters.connections_rejected += 1
                conn.close()
                continue
            conn.setblocking(False)
            self._nconns += 1
            self._per_peer[remote] = self._per_peer.get(remote, 0) + 1
            t = self._tg.create_task(self._serve_conn(conn, remote))
            ln.conns.add(t)
            t.add_done_callback(ln.conns.discard)

    # -- one connection -------------------------------------------------------------------
    async def _serve_conn(self, sock: socket.socket, remote: str) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        try:
            while True:
                req = await self._read_request(h, sock, remote)
                if req is None:
                    return
                out = self.core.handle(req)
                if isinstance(out, DNSQuery):
                    out = self.core.finish_dns(out, await self._answer(out.query))
                await self._send(h, sock, out, head=req.method == "HEAD")
                if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                    return  # MUST_CLOSE (Connection: close, HTTP/1.0) or anything unexpected
                h.start_next_cycle()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one connection's trouble must not reach the TaskGroup
            self.core.counters.count(0, "connection-error")
            self._log.debug("peerapi: connection from %s failed", remote, exc_info=True)
        finally:
            sock.close()
            self._nconns -= 1
            n = self._per_peer.get(remote, 1) - 1
            if n <= 0:
                self._per_peer.pop(remote, None)
            else:
                self._per_peer[remote] = n

    async def _read_request(self, h: h11.Connection, sock: socket.socket, remote: str) -> Request | None:
        """The next complete request, or None when the connection should close (error already answered)."""
        loop = asyncio.get_running_loop()
        head: h11.Request | None = None
        body = bytearray()
        deadline: float | None = None  # set at a request's first byte
        while True:
            try:
                ev = h.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if 400 <= e.error_status_hint < 600 else 400
                await self._reject(h, sock, status, "malformed HTTP request", "http-malformed")
                return None
            if ev is h11.NEED_DATA:
                if deadline is None and (h.their_state is not h11.IDLE or h.trailing_data[0]):
                    deadline = loop.time() + self.limits.request_timeout
                timeout = self.limits.idle_timeout if deadline is None else max(0.0, deadline - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        data = await loop.sock_recv(sock, RECV_CHUNK)
                except (asyncio.TimeoutError, TimeoutError):
                    if deadline is not None:
                        await self._reject(h, sock, 408, "request timeout", "http-timeout")
                    return None
                except OSError:
                    return None
                h.receive_data(data)
                continue
            if isinstance(ev, h11.Request):
                head = ev
                if deadline is None:
                    deadline = loop.time() + self.limits.request_timeout
                if len(ev.target) + sum(len(k) + len(v) + 4 for k, v in ev.headers) > self.limits.max_header_bytes:
                    # h11 bounds only incomplete heads; a complete one that arrived in one read is checked here
                    await self._reject(h, sock, 431, "request header fields too large", "http-malformed")
                    return None
                clen = _content_length(ev.headers)
                if clen is not None and clen > self.limits.max_body_bytes:
                    await self._reject(h, sock, 413, "request body too large", "http-body-too-large")
                    return None
                if h.they_are_waiting_for_100_continue:
                    await self._write(sock, h.send(h11.InformationalResponse(status_code=100, headers=[])))
                continue
            if isinstance(ev, h11.Data):
                body += ev.data
                if len(body) > self.limits.max_body_bytes:
                    await self._reject(h, sock, 413, "request body too large", "http-body-too-large")
                    return None
                continue
            if isinstance(ev, h11.EndOfMessage) and head is not None:
                return Request(
                    method=head.method.decode("ascii", "replace"),
                    target=head.target.decode("latin-1"),
                    headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers),
                    body=bytes(body),
                    remote=remote,
                )
            return None  # ConnectionClosed, PAUSED or anything unexpected

    async def _answer(self, query: bytes) -> DNSAnswer:
        if self._answer_dns is None:
            return DNSAnswer(failed=True)
        try:
            async with asyncio.timeout(self.limits.dns_timeout):
                reply = await self._answer_dns(query)
        except (asyncio.TimeoutError, TimeoutError):
            return DNSAnswer(timed_out=True)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - becomes a 502
            self._log.debug("peerapi: DNS answer failed", exc_info=True)
            return DNSAnswer(failed=True)
        return DNSAnswer(reply=reply)

    async def _reject(self, h: h11.Connection, sock: socket.socket, status: int, msg: str, reason: str) -> None:
        """Answer an HTTP-level error (if the state still allows a response) before closing."""
        self.core.counters.count(status, reason)
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            body = (msg + "\n").encode()
            await self._write(
                sock,
                h.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))),
                            ("Connection", "close"),
                        ],
                    )
                )
                + h.send(h11.Data(data=body))
                + h.send(h11.EndOfMessage()),
            )

    async def _send(self, h: h11.Connection, sock: socket.socket, resp: Response, *, head: bool) -> None:
        headers = [(k, v) for k, v in resp.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(resp.body))))
        out = h.send(h11.Response(status_code=resp.status, headers=headers))
        if resp.body and not head:
            out += h.send(h11.Data(data=resp.body))
        out += h.send(h11.EndOfMessage())
        await self._write(sock, out)

    async def _write(self, sock: socket.socket, data: bytes) -> None:
        if data:
            async with asyncio.timeout(self.limits.write_timeout):
                await asyncio.get_running_loop().sock_sendall(sock, data)


def _content_length(headers) -> int | None:
    for k, v in headers:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _listen_socket(ip: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ip:port (IP_FREEBIND: the address may not be up yet)."""
    s = bound_socket(ip, port, socket.SOCK_STREAM)
    try:
        s.listen(LISTEN_BACKLOG)
    except BaseException:
        s.close()
        raise
    return s
