"""The peerAPI HTTP adapter over loopback: real HTTP clients, our MagicDNS resolver, a real upstream DNS server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.message
import pytest

from engine.dns.config import ResolverConfig, Upstream
from engine.dns.resolver import Resolver
from engine.dns.server import DNSServer
from engine.peerapi import Access, PeerAPICore, PeerIdentity
from engine.peerapi.ports import candidate_ports
from engine.peerapi.server import Limits, PeerAPIServer
from tests.lab.rawsock import exchange

UPSTREAM = Path(__file__).resolve().parents[1] / "exitdns" / "upstream_dns.py"
ZONE = {"www.example.org.": "203.0.113.80"}
LO, LO2 = "127.0.0.1", "127.0.0.2"


def arun(fn):
    """Run an async test on a fresh event loop (no asyncio pytest plugin here)."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return asyncio.run(asyncio.wait_for(fn(*a, **kw), 60))

    return wrapper


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upstream():
    """tests/exitdns/upstream_dns.py (dnspython, UDP+TCP) on loopback."""
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, str(UPSTREAM), LO, str(port), json.dumps(ZONE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        yield Upstream(LO, port)
    finally:
        p.kill()
        p.wait()


def access(*, offering_exit: bool = True, user: int = 10) -> Access:
    me = PeerIdentity(1, "me.ts.net.", 10)
    peer = PeerIdentity(2, "peer.ts.net.", user)
    return Access(frozenset({LO, LO2}), 10, {LO: peer, LO2: me}, offering_exit, lambda ip: offering_exit)


@contextlib.asynccontextmanager
async def serving(upstream: Upstream, *, acc: Access | None = None, limits: Limits = Limits(), deterministic=False):
    resolver = Resolver(
        ResolverConfig(hosts={"me.ts.net.": ("100.64.0.1",)}, local_domains=("ts.net.",), upstreams=(upstream,))
    )
    async with DNSServer(resolver, [(LO, 0)]) as dnsd:
        core = PeerAPICore(acc or access(), self_name="me.ts.net.")
        kw = {} if deterministic else {"ports_for": lambda ip: []}
        async with PeerAPIServer(core, dnsd.answer, limits=limits, **kw) as srv:
            srv.set_addresses([LO])
            yield srv


def q64(name: str, qid: int = 77) -> tuple[bytes, str]:
    q = dns.message.make_query(name, "A")
    q.id = qid
    w = q.to_wire()
    return w, base64.urlsafe_b64encode(w).rstrip(b"=").decode()


def answers(wire: bytes) -> list[str]:
    return [rd.to_text() for rr in dns.message.from_wire(wire).answer for rd in rr]


@arun
async def test_get_and_post_keepalive(upstream):
    async with serving(upstream) as srv:
        port = srv.ports[LO]

        def client():
            c = http.client.HTTPConnection(LO, port, timeout=10)
            w, b = q64("www.example.org.")
            c.request("GET", "/dns-query?dns=" + b, headers={"Accept": "application/dns-message"})
            r1 = c.getresponse()
            body1 = r1.read()
            sock1 = c.sock
            c.request(
                "POST", "/dns-query", body=q64("me.ts.net.", 78)[0], headers={"Content-Type": "application/dns-message"}
            )
            r2 = c.getresponse()
            body2 = r2.read()
            same = c.sock is sock1  # keep-alive: http.client reuses the socket unless the server closed it
            c.close()
            return r1.status, r1.getheader("Content-Type"), body1, r2.status, body2, same

        s1, ct, b1, s2, b2, same = await asyncio.to_thread(client)
        assert (s1, ct, s2) == (200, "application/dns-message", 200)
        assert dns.message.from_wire(b1).id == 77 and answers(b1) == ["203.0.113.80"]  # forwarded upstream
        assert answers(b2) == ["100.64.0.1"]  # tailnet name answered locally
        assert same
        assert srv.core.counters.dns_replies == 2


@arun
async def test_urllib_and_debug_form(upstream):
    async with serving(upstream) as srv:
        base = f"http://{LO}:{srv.ports[LO]}"

        def client():
            with urllib.request.urlopen(base + "/dns-query?q=www.example.org", timeout=10) as r:
                return json.loads(r.read())

        assert await asyncio.to_thread(client) == ["203.0.113.80"]


@arun
async def test_errors_over_http(upstream):
    async with serving(upstream, acc=access(offering_exit=False, user=20)) as srv:
        port = srv.ports[LO]

        def client():
            out = []
            c = http.client.HTTPConnection(LO, port, timeout=10)
            for method, path, body, hdrs in [
                ("GET", "/dns-query?dns=" + q64("x.")[1], None, {}),  # not an exit node, other user
                ("GET", "/nope", None, {}),
                ("DELETE", "/", None, {}),
            ]:
                c.request(method, path, body=body, headers=hdrs)
                r = c.getresponse()
                r.read()
                out.append(r.status)
            c.close()
            return out

        assert await asyncio.to_thread(client) == [403, 404, 405]


@arun
async def test_oversize_body_and_malformed(upstream):
    async with serving(upstream) as srv:
        port = srv.ports[LO]

        def raw(data: bytes) -> bytes:
            return exchange((LO, port), data)

        big = await asyncio.to_thread(
            raw,
            b"POST /dns-query HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
            b"Content-Type: application/dns-message\r\nContent-Length: 100000\r\n\r\n",
        )
        assert big.startswith(b"HTTP/1.1 413 ")
        junk = await asyncio.to_thread(raw, b"\x16\x03\x01 this is not http\r\n\r\n")
        assert junk.startswith(b"HTTP/1.1 400 ")
        huge_head = await asyncio.to_thread(raw, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert huge_head.startswith(b"HTTP/1.1 431 ")
        errs = srv.core.counters.errors
        assert errs["http-body-too-large"] == 1 and errs["http-malformed"] == 2
        # still serving afterwards
        w, b = q64("www.example.org.")
        ok = await asyncio.to_thread(
            raw, b"GET /dns-query?dns=" + b.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200 ")


@arun
async def test_idle_timeout_and_connection_limit(upstream):
    limits = Limits(idle_timeout=0.3, max_connections=2, max_connections_per_peer=2)
    async with serving(upstream, limits=limits) as srv:
        port = srv.ports[LO]

        def client():
            a = socket.create_connection((LO, port), timeout=10)
            b = socket.create_connection((LO, port), timeout=10)
            time.sleep(0.1)
            c = socket.create_connection((LO, port), timeout=10)
            third = c.recv(1)  # over the limit: closed at once
            idle_closed = a.recv(1) == b""  # idle: closed by the server after idle_timeout
            for s in (a, b, c):
                s.close()
            return third, idle_closed

        third, idle_closed = await asyncio.to_thread(client)
        assert third == b"" and idle_closed
        assert srv.core.counters.connections_rejected >= 1


@arun
async def test_unknown_source_closed(upstream):
    acc = Access(frozenset({LO}), 10, {}, True, lambda ip: True)  # nobody is a known peer
    async with serving(upstream, acc=acc) as srv:
        port = srv.ports[LO]

        def client():
            with socket.create_connection((LO, port), timeout=10) as s:
                try:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
                    return s.recv(100)
                except ConnectionResetError:  # closed with our request unread: RST
                    return b""

        assert await asyncio.to_thread(client) == b""
        assert srv.core.counters.connections_rejected == 1


@arun
async def test_rebind_on_address_change(upstream):
    async with serving(upstream, deterministic=True) as srv:
        p1 = srv.ports[LO]
        assert p1 in candidate_ports(LO) or p1 > 0
        ports = srv.set_addresses([LO2])
        assert list(ports) == [LO2]
        with pytest.raises(OSError):
            socket.create_connection((LO, p1), timeout=2).close()
        assert srv.set_addresses([LO2]) == ports  # unchanged: no rebind

        def client():
            with urllib.request.urlopen(f"http://{LO2}:{ports[LO2]}/", timeout=10) as r:
                return r.status, r.read()

        status, body = await asyncio.to_thread(client)
        assert status == 200 and b"me.ts.net." in body
