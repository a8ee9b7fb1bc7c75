"""Two MagicConns + a real derper on loopback: DERP first, then direct; packets flow both ways."""

from __future__ import annotations

import asyncio
import threading

import nacl.public
import pytest

from engine.magicsock.bind import PeerEndpoint
from engine.magicsock.conn import MagicConn, PeerConfig
from tests.lab.derper import Derper, derper_available

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not derper_available(), reason="derper not built")]


class Receiver:
    """Drains a MagicBind in a thread, like the Device's workers do."""

    def __init__(self, bind):
        self.bind = bind
        self.got: list[tuple[bytes, object]] = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        buf = bytearray(65536)
        while True:
            n, seg, ep = self.bind.recv_into(buf)
            if ep is None:
                return
            for off in range(0, n, seg or n):  # a GRO run holds several datagrams
                self.got.append((bytes(buf[off : min(n, off + seg)]), ep))


async def wait_until(pred, timeout, step=0.05):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            return False
        await asyncio.sleep(step)
    return True


def test_derp_first_then_direct_loopback():
    with Derper() as d:

        async def main():
            ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
            mk = dict(derp_map=d.derp_map(), use_derp_http=True, local_addrs=lambda: ["127.0.0.1"])
            async with MagicConn(ka, **mk) as a, MagicConn(kb, **mk) as b:
                ra, rb = Receiver(a.bind), Receiver(b.bind)
                rep = await a.netcheck()
                await b.netcheck()
                assert rep.udp and rep.preferred_derp == d.region_id
                assert rep.global_v4 == ("127.0.0.1", a.port)
                assert a.net_info()["PreferredDERP"] == d.region_id
                assert {e.addr for e in a.endpoints()} == {f"127.0.0.1:{a.port}"}
                # peers know each other's keys and home DERP but no endpoints yet
                a.set_peers([PeerConfig.make(b.node_public, b.disco_public, d.region_id)])
                b.set_peers([PeerConfig.make(a.node_public, a.disco_public, d.region_id)])
                assert await wait_until(lambda: all(c.derp_status()[d.region_id].connected for c in (a, b)), 10)
                await asyncio.sleep(0.3)  # let the server register both (ServerInfo)
                epb = PeerEndpoint(b.node_public)
                a.bind.send([b"\x04\x00\x00\x00first"], epb)
                assert await wait_until(lambda: rb.got, 10)
                data, src = rb.got[0]
                assert data == b"\x04\x00\x00\x00first" and src == PeerEndpoint(a.node_public)
                st = a.peer_status()[b.node_public]
                assert st.tx_derp_packets >= 1

                # keep sending; CallMeMaybe via DERP + pings should make it direct
                async def direct():
                    a.bind.send([b"\x04\x00\x00\x00more"], epb)
                    b.bind.send([b"\x04\x00\x00\x00back"], PeerEndpoint(a.node_public))
                    return (
                        a.peer_status()[b.node_public].path == "direct"
                        and b.peer_status()[a.node_public].path == "direct"
                    )

                for _ in range(200):
                    if await direct():
                        break
                    await asyncio.sleep(0.05)
                sa = a.peer_status()[b.node_public]
                assert sa.path == "direct", sa
                assert sa.addr == f"127.0.0.1:{b.port}" and sa.latency_ms is not None
                n0 = len(rb.got)
                before = a.counters.derp_tx
                for i in range(20):
                    a.bind.send([b"\x04\x00\x00\x00d%d" % i], epb)
                assert await wait_until(lambda: len(rb.got) >= n0 + 20, 5)
                assert a.counters.derp_tx == before  # direct only now
                assert ra.got  # b -> a worked too
                # a GSO run (Bind.send with seg): 5 datagrams of 64 bytes (last one shorter)
                n0 = len(rb.got)
                run = b"".join(b"\x04\x00\x00\x00" + bytes([i]) * 60 for i in range(4)) + b"\x04\x00\x00\x00tail"
                a.bind.send([memoryview(run)], epb, 64)
                assert await wait_until(lambda: len(rb.got) >= n0 + 5, 5)
                got = [d for d, _ in rb.got[n0 : n0 + 5]]
                assert got == [run[o : o + 64] for o in range(0, len(run), 64)]

        asyncio.run(main())


def test_node_key_rotation_redials_derp_with_the_new_key():
    """After a key rotation the DERP server must route to our new key: DERP connections are redialled with it."""
    with Derper() as d:

        async def main():
            ka, kb, ka2 = (nacl.public.PrivateKey.generate() for _ in range(3))
            mk = dict(derp_map=d.derp_map(), use_derp_http=True, local_addrs=lambda: ["127.0.0.1"])
            async with MagicConn(ka, **mk) as a, MagicConn(kb, **mk) as b:
                rb, ra = Receiver(b.bind), Receiver(a.bind)
                a.set_home_derp(d.region_id)
                b.set_home_derp(d.region_id)
                old = a.node_public
                a.set_node_private(ka2)
                assert a.node_public == bytes(ka2.public_key) != old
                a.set_peers([PeerConfig.make(b.node_public, b.disco_public, d.region_id)])
                b.set_peers([PeerConfig.make(a.node_public, a.disco_public, d.region_id)])
                assert await wait_until(lambda: all(c.derp_status()[d.region_id].connected for c in (a, b)), 10)
                await asyncio.sleep(0.3)
                # b -> a's NEW key over DERP (no UDP endpoints known): only a redialled connection receives it
                for _ in range(50):
                    b.bind.send([b"\x04\x00\x00\x00new-key"], PeerEndpoint(a.node_public))
                    if await wait_until(lambda: ra.got, 0.2):
                        break
                assert ra.got and ra.got[0][0] == b"\x04\x00\x00\x00new-key"
                assert ra.got[0][1] == PeerEndpoint(b.node_public)
                a.bind.send([b"\x04\x00\x00\x00from-new"], PeerEndpoint(b.node_public))
                assert await wait_until(lambda: any(src == PeerEndpoint(a.node_public) for _, src in rb.got), 10)

        asyncio.run(main())
