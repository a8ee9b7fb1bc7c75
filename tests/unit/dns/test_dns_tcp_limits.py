"""MagicDNS over TCP: forwarded queries count in the in-flight limit; connection caps per source and in total."""

from __future__ import annotations

import asyncio
import struct

import dns.message

from engine.dns import Resolver, config_from_netmap, server as server_mod
from engine.dns.server import DNSServer


class _StuckForwarder:
    """Never answers (an upstream that hangs): each forward stays in flight."""

    def __init__(self) -> None:
        self.started = 0

    async def forward(self, query, upstreams, tcp=False):
        self.started += 1
        await asyncio.sleep(3600)

    async def aclose(self) -> None:
        pass


def _resolver() -> Resolver:
    return Resolver(
        config_from_netmap(
            {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]}, [], {"Resolvers": [{"Addr": "192.0.2.53"}]}
        )
    )


async def _open(port: int, src: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))


async def _ask(writer, name: str) -> None:
    q = dns.message.make_query(name, "A").to_wire()
    writer.write(struct.pack("!H", len(q)) + q)
    await writer.drain()


def test_tcp_forwards_count_in_flight(monkeypatch) -> None:
    monkeypatch.setattr(server_mod, "MAX_INFLIGHT", 2)

    async def run() -> None:
        res, fwd = _resolver(), _StuckForwarder()
        async with DNSServer(res, [("127.0.0.1", 0)], forwarder=fwd) as srv:
            port = srv.bound[0][1]
            conns = [await _open(port) for _ in range(3)]
            for i, (_, w) in enumerate(conns[:2]):
                await _ask(w, f"n{i}.example.org")
            await asyncio.sleep(0.2)
            assert fwd.started == 2 and srv._inflight == 2
            await _ask(conns[2][1], "n2.example.org")
            assert await asyncio.wait_for(conns[2][0].read(), 2) == b""  # refused: closed
            assert res.counters.drops.get("busy") == 1 and fwd.started == 2
            for _, w in conns:
                w.close()

    asyncio.run(run())


def test_tcp_connection_caps() -> None:
    async def run() -> None:
        res = _resolver()
        async with DNSServer(res, [("127.0.0.1", 0)], max_tcp_conns=5, max_tcp_conns_per_source=2) as srv:
            port = srv.bound[0][1]
            a = [await _open(port, "127.0.0.2") for _ in range(3)]
            assert await asyncio.wait_for(a[2][0].read(), 2) == b""  # third from one source: closed at once
            assert res.counters.drops.get("tcp-conn-limit-source") == 1
            others = [await _open(port, f"127.0.0.{i}") for i in (3, 4, 4)]
            last = await _open(port, "127.0.0.5")
            assert await asyncio.wait_for(last[0].read(), 2) == b""  # 6th overall
            assert res.counters.drops.get("tcp-conn-limit-total") == 1
            await _ask(others[0][1], "me.tail.example")  # an admitted one is answered
            hdr = await asyncio.wait_for(others[0][0].readexactly(2), 2)
            assert struct.unpack("!H", hdr)[0] > 12
            for r, w in a[:2]:
                w.close()
            await asyncio.sleep(0.2)
            assert srv.tcp_conns.count == 3
            for _, w in [*a, *others, last]:
                w.close()

    asyncio.run(run())
