"""Our DERP client against a real derper on loopback: relay, PeerGone, restart -> reconnect, malformed input."""

from __future__ import annotations

import asyncio

import nacl.public
import pytest

from engine.derp import protocol as p
from engine.derp.client import DerpClient
from engine.derp.derpmap import DerpMap
from tests.lab.derper import Derper, derper_available

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not derper_available(), reason="derper not built")]


@pytest.fixture
def derper():
    with Derper() as d:
        yield d


class Sink:
    """Collects DERP client events; wait_for polls (no tasks, no lost wake-ups)."""

    def __init__(self):
        self.events: list = []

    def __call__(self, region, ev):
        self.events.append(ev)

    async def wait_for(self, pred, timeout=10.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            if loop.time() > deadline:
                raise asyncio.TimeoutError(f"no matching event; got {self.events!r}"[:2000])
            await asyncio.sleep(0.02)


def test_fwmark_dial(derper):
    """With fwmark set, the TCP connection is made from a socket carrying SO_MARK (needs root)."""

    async def main():
        ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
        sa, sb = Sink(), Sink()
        async with _client(derper, ka, sa, fwmark=0x80000) as a, _client(derper, kb, sb):
            await sa.wait_for(lambda e: isinstance(e, p.ServerInfo))
            await sb.wait_for(lambda e: isinstance(e, p.ServerInfo))
            import socket as _socket

            mark = a._writer.get_extra_info("socket").getsockopt(_socket.SOL_SOCKET, _socket.SO_MARK)
            assert mark == 0x80000
            assert a.send_packet(bytes(kb.public_key), b"marked")
            ev = await sb.wait_for(lambda e: isinstance(e, p.PacketReceived))
            assert ev.data == b"marked"

    asyncio.run(main())


def _client(derper, key, sink, **kw):
    region = DerpMap.from_json(derper.derp_map()).regions[derper.region_id]
    return DerpClient(region, key, sink, use_http=True, backoff_min=0.05, backoff_max=0.5, **kw)


def test_two_clients_exchange_and_peer_gone(derper):
    async def main():
        ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
        sa, sb = Sink(), Sink()
        async with _client(derper, ka, sa) as a:
            b = _client(derper, kb, sb)
            async with b:
                await a.wait_connected(10)
                await b.wait_connected(10)
                # the server registers a client before it sends ServerInfo: wait for both
                await sa.wait_for(lambda e: isinstance(e, p.ServerInfo))
                await sb.wait_for(lambda e: isinstance(e, p.ServerInfo))
                a.note_preferred(True)
                assert a.send_packet(bytes(kb.public_key), b"hello from a")
                ev = await sb.wait_for(lambda e: isinstance(e, p.PacketReceived))
                assert ev.src == bytes(ka.public_key) and ev.data == b"hello from a"
                assert b.send_packet(bytes(ka.public_key), b"x" * 1400)
                ev = await sa.wait_for(lambda e: isinstance(e, p.PacketReceived))
                assert ev.data == b"x" * 1400
                assert a.status().connected and a.status().packets_out == 1
            # b left: a (who talked to b) is told the peer is gone
            ev = await sa.wait_for(lambda e: isinstance(e, p.PeerGoneEvent))
            assert ev.key == bytes(kb.public_key) and ev.reason == 0

    asyncio.run(main())


def test_restart_reconnects(derper):
    async def main():
        ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
        sa, sb = Sink(), Sink()
        async with _client(derper, ka, sa) as a, _client(derper, kb, sb) as b:
            await a.wait_connected(10)
            await b.wait_connected(10)
            await asyncio.to_thread(derper.restart)
            await sa.wait_for(lambda e: isinstance(e, p.Closed))
            for c in (a, b):
                for _ in range(200):
                    if c.connected and c.connects >= 2:
                        break
                    await asyncio.sleep(0.05)
                assert c.connects >= 2 and c.reconnects >= 1
            sb.events.clear()
            for _ in range(50):  # the peer may still be registering on the new server
                a.send_packet(bytes(kb.public_key), b"after restart")
                try:
                    await sb.wait_for(lambda e: isinstance(e, p.PacketReceived), timeout=0.2)
                    break
                except asyncio.TimeoutError:
                    pass
            assert any(isinstance(e, p.PacketReceived) and e.data == b"after restart" for e in sb.events)

    asyncio.run(main())


def test_malformed_server_counted_and_reconnects():
    """A fake 'server' that answers 101 then garbage: clear error, counted, reconnect attempts."""

    async def main():
        hits = 0

        async def handle(reader, writer):
            nonlocal hits
            hits += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + b"\x01\x00\x00\x00\x05DERP!")
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        region = DerpMap.from_json(
            {
                "Regions": {
                    "1": {
                        "RegionID": 1,
                        "Nodes": [{"Name": "1a", "RegionID": 1, "HostName": "127.0.0.1", "DERPPort": port}],
                    }
                }
            }
        ).regions[1]
        sink = Sink()
        async with (
            srv,
            DerpClient(
                region, nacl.public.PrivateKey.generate(), sink, use_http=True, backoff_min=0.05, backoff_max=0.1
            ) as c,
        ):
            ev = await sink.wait_for(lambda e: isinstance(e, p.Closed))
            assert ev.malformed and ev.reason == "ServerKey frame too short (5 bytes)"
            for _ in range(100):
                if hits >= 2:
                    break
                await asyncio.sleep(0.05)
            assert hits >= 2 and c.malformed >= 1

    asyncio.run(main())


def test_tls_derper_insecure_for_tests():
    """TLS DERP (derper -certmode manual, self-signed): InsecureForTests skips verification."""
    with Derper(tls_hostname="derp.test") as d:

        async def main():
            ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
            sa, sb = Sink(), Sink()
            region = DerpMap.from_json(d.derp_map()).regions[d.region_id]
            async with DerpClient(region, ka, sa) as a, DerpClient(region, kb, sb):
                await sa.wait_for(lambda e: isinstance(e, p.ServerInfo))
                await sb.wait_for(lambda e: isinstance(e, p.ServerInfo))
                assert a.send_packet(bytes(kb.public_key), b"over tls")
                ev = await sb.wait_for(lambda e: isinstance(e, p.PacketReceived))
                assert ev.data == b"over tls"

        asyncio.run(main())

    # without InsecureForTests the self-signed certificate is refused
    with Derper(tls_hostname="derp.test") as d:

        async def refused():
            m = d.derp_map()
            m["Regions"][str(d.region_id)]["Nodes"][0]["InsecureForTests"] = False
            region = DerpMap.from_json(m).regions[d.region_id]
            sink = Sink()
            async with DerpClient(region, nacl.public.PrivateKey.generate(), sink, backoff_min=0.05) as c:
                for _ in range(100):
                    if "CERTIFICATE_VERIFY_FAILED" in c.last_error:
                        break
                    await asyncio.sleep(0.05)
                assert "CERTIFICATE_VERIFY_FAILED" in c.last_error and not c.connected

        asyncio.run(refused())


def test_tls_derper_cert_pin():
    """DERPNode.CertName "sha256-raw:<hex>" pins the self-signed cert: right pin connects, wrong pin is refused."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with Derper(tls_hostname="derp.test") as d:
        pem = (d.workdir / "certs" / "derp.test.crt").read_bytes()
        pin = hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)).hexdigest()

        async def attempt(cert_name):
            m = d.derp_map()
            node = m["Regions"][str(d.region_id)]["Nodes"][0]
            node["InsecureForTests"] = False
            node["CertName"] = cert_name
            region = DerpMap.from_json(m).regions[d.region_id]
            sink = Sink()
            async with DerpClient(region, nacl.public.PrivateKey.generate(), sink, backoff_min=0.05) as c:
                for _ in range(100):
                    if c.connected or c.last_error:
                        break
                    await asyncio.sleep(0.05)
                return c.connected, c.last_error

        ok, err = asyncio.run(attempt("sha256-raw:" + pin))
        assert ok, err
        ok, err = asyncio.run(attempt("sha256-raw:" + "00" * 32))
        assert not ok and "does not match pinned" in err
