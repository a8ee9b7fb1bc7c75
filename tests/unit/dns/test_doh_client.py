"""Adapter tests of the DoH client and the forwarder's DoH path against a real tiny DoH server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rrset
import h11
import pytest

from engine.dns.config import parse_upstream
from engine.dns.doh import DoHClient, DoHError
from engine.dns.forwarder import Forwarder

ANSWER = "203.0.113.80"


@dataclass
class DoHServer:
    """RFC 8484 POST server (h11 + dnspython) answering every A query with ANSWER; knobs for failure modes."""

    status: int = 200
    content_type: str = "application/dns-message"
    close_after: bool = False  # "Connection: close" on every response
    delay: float = 0.0
    big: bool = False
    connections: int = 0
    requests: list[dict] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set = field(default_factory=set)

    async def __aenter__(self) -> "DoHServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()

    def drop_connections(self) -> None:
        for w in list(self._writers):
            w.close()

    def url(self, path: str = "/dns-query") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                req, body = None, b""
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                        continue
                    if isinstance(ev, h11.Request):
                        req = ev
                    elif isinstance(ev, h11.Data):
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    elif isinstance(ev, h11.ConnectionClosed):
                        return
                self.requests.append(
                    {
                        "method": req.method,
                        "target": req.target,
                        "headers": {k.decode(): v.decode() for k, v in req.headers},
                    }
                )
                if self.delay:
                    await asyncio.sleep(self.delay)
                q = dns.message.from_wire(body)
                r = dns.message.make_response(q)
                for i in range(60 if self.big else 1):
                    r.answer.append(
                        dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ANSWER if i == 0 else f"10.0.0.{i}")
                    )
                out = r.to_wire()
                headers = [("Content-Type", self.content_type), ("Content-Length", str(len(out)))]
                if self.close_after:
                    headers.append(("Connection", "close"))
                writer.write(conn.send(h11.Response(status_code=self.status, headers=headers)))
                writer.write(conn.send(h11.Data(data=out)) + conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


def query(name: str = "www.example.org", **kw) -> bytes:
    return dns.message.make_query(name, "A", **kw).to_wire()


def answers(wire: bytes) -> list[str]:
    return [rd.to_text() for rr in dns.message.from_wire(wire).answer for rd in rr]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_post_headers_and_connection_reuse() -> None:
    async def go():
        async with DoHServer() as srv:
            client = DoHClient()
            up = parse_upstream(srv.url())
            try:
                for _ in range(3):
                    q = query()
                    r = await client.query(up, q)
                    assert r[:2] == q[:2] and answers(r) == [ANSWER]
            finally:
                await client.aclose()
            assert srv.connections == 1 and client.counters.reused == 2 and client.counters.answers == 3
            h = srv.requests[0]
            assert h["method"] == b"POST" and h["target"] == b"/dns-query"
            assert h["headers"]["content-type"] == "application/dns-message"
            assert h["headers"]["accept"] == "application/dns-message"
            assert h["headers"]["host"] == f"127.0.0.1:{srv.port}"

    run(go())


def test_concurrent_queries_use_parallel_connections() -> None:
    async def go():
        async with DoHServer(delay=0.2) as srv:
            client = DoHClient()
            up = parse_upstream(srv.url())
            try:
                rs = await asyncio.gather(*(client.query(up, query(f"n{i}.example")) for i in range(5)))
            finally:
                await client.aclose()
            assert all(answers(r) == [ANSWER] for r in rs) and srv.connections == 5

    run(go())


def test_server_closing_idle_connection_is_retried_once() -> None:
    async def go():
        async with DoHServer() as srv:
            client = DoHClient()
            up = parse_upstream(srv.url())
            try:
                await client.query(up, query())
                srv.drop_connections()  # the server times the idle keep-alive out
                await asyncio.sleep(0.05)
                assert answers(await client.query(up, query())) == [ANSWER]
            finally:
                await client.aclose()
            assert srv.connections == 2

    run(go())


def test_connection_close_response_not_reused() -> None:
    async def go():
        async with DoHServer(close_after=True) as srv:
            client = DoHClient()
            up = parse_upstream(srv.url())
            try:
                for _ in range(2):
                    assert answers(await client.query(up, query())) == [ANSWER]
            finally:
                await client.aclose()
            assert srv.connections == 2 and client.counters.reused == 0

    run(go())


@pytest.mark.parametrize(
    "kw,kind",
    [
        pytest.param({"status": 500}, "status", id="http500"),
        pytest.param({"status": 404}, "status", id="http404"),
        pytest.param({"content_type": "text/html"}, "content-type", id="content_type"),
        pytest.param({"delay": 2.0}, "timeout", id="timeout"),
    ],
)
def test_errors_are_counted_not_crashing(kw, kind) -> None:
    async def go():
        async with DoHServer(**kw) as srv:
            client = DoHClient(timeout=0.5)
            try:
                with pytest.raises(DoHError) as ei:
                    await client.query(parse_upstream(srv.url()), query())
            finally:
                await client.aclose()
            assert ei.value.kind == kind and client.counters.errors[kind] == 1

    run(go())


def test_connection_refused_is_a_doh_error() -> None:
    async def go():
        async with DoHServer() as srv:
            port = srv.port
        client = DoHClient(timeout=2)
        with pytest.raises(DoHError) as ei:
            await client.query(parse_upstream(f"http://127.0.0.1:{port}/dns-query"), query())
        assert ei.value.kind == "connect"

    run(go())


def test_forwarder_dispatches_doh_and_falls_back() -> None:
    """A dead DoH upstream is skipped (counted), the next one answers; UDP replies too big get TC."""

    async def go():
        async with DoHServer(big=True) as srv:
            hooked = []
            fwd = Forwarder(socket_hook=hooked.append)
            dead = parse_upstream("http://127.0.0.1:1/dns-query")
            try:
                r = await fwd.forward(query(), (dead, parse_upstream(srv.url())))
                assert r is not None and r[2] & 0x02 and answers(r)[0] == ANSWER  # 60 answers > 512: TC over UDP
                r = await fwd.forward(query(), (parse_upstream(srv.url()),), tcp=True)
                assert not r[2] & 0x02
                r = await fwd.forward(query(use_edns=0, payload=4096), (parse_upstream(srv.url()),))
                assert not r[2] & 0x02
                assert await fwd.forward(query(), (dead,)) is None
            finally:
                await fwd.aclose()
            assert fwd.errors == 2 and len(hooked) >= 2  # every DoH socket went through the hook

    run(go())


def test_closed_client_refuses() -> None:
    async def go():
        client = DoHClient()
        await client.aclose()
        with pytest.raises(DoHError):
            await client.query(parse_upstream("http://127.0.0.1:9/dns-query"), query())

    run(go())


def test_idle_connection_expires() -> None:
    now = [0.0]

    async def go():
        async with DoHServer() as srv:
            client = DoHClient(clock=lambda: now[0])
            up = parse_upstream(srv.url())
            try:
                await client.query(up, query())
                now[0] += 11.0  # past IDLE_TIMEOUT: not reused
                await client.query(up, query())
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            assert srv.connections == 2 and client.counters.reused == 0

    run(go())
