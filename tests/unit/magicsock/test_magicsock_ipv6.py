"""Dual-stack magicsock socket on loopback: a direct path over IPv6 (::1) with no DERP at all."""

from __future__ import annotations

import asyncio
import socket

import nacl.public
import pytest

from engine.magicsock.bind import PeerEndpoint
from engine.magicsock.conn import MagicConn, PeerConfig
from tests.nat.test_magicsock_loopback import Receiver, wait_until


def _has_v6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_v6_loopback(), reason="no IPv6 loopback")
def test_direct_over_ipv6_loopback():
    async def main():
        ka, kb = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
        async with MagicConn(ka, local_addrs=lambda: []) as a, MagicConn(kb, local_addrs=lambda: []) as b:
            rb = Receiver(b.bind)
            a.set_peers([PeerConfig.make(b.node_public, b.disco_public, 0, [f"[::1]:{b.port}"])])
            b.set_peers([PeerConfig.make(a.node_public, a.disco_public, 0, [f"[::1]:{a.port}", f"127.0.0.1:{a.port}"])])
            ep = PeerEndpoint(b.node_public)

            def direct():
                a.bind.send([b"\x04\x00\x00\x00hello"], ep)
                return a.peer_status()[b.node_public].path == "direct"

            assert await wait_until(direct, 10)
            st = a.peer_status()[b.node_public]
            assert st.addr == f"[::1]:{b.port}"
            assert await wait_until(lambda: any(d == b"\x04\x00\x00\x00hello" for d, _ in rb.got), 5)
            assert rb.got[-1][1] == PeerEndpoint(a.node_public)

    asyncio.run(main())
