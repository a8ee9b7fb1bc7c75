"""NodeTransport on loopback with a real derper: netmap glue, WireGuard endpoints, disco ping via DERP then direct."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from engine.magicsock.bind import PeerEndpoint
from engine.tailcfg import decode
from engine.tailcfg.derp import DERPMap
from engine.types.keys import DiscoPrivate, NodePrivate
from engine.wgengine.reconfig import WgConfig, WgPeer
from engine.wgengine.transport import NodeTransport, derp_http_for, derp_http_from_env
from tests.lab.derper import Derper, derper_available
from tests.lab.netlab import apoll_until

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not derper_available(), reason="derper not built")]


def test_derp_http_from_env():
    assert derp_http_from_env({"TS_DEBUG_USE_DERP_HTTP": "1"})
    assert derp_http_from_env({"MESH_DEBUG_USE_DERP_HTTP": "true"})
    assert not derp_http_from_env({"MESH_DEBUG_USE_DERP_HTTP": "0"})
    assert not derp_http_from_env({})
    assert derp_http_for("http://203.0.113.1:8080", {}) and not derp_http_for("https://hs.example", {})
    assert derp_http_for("https://hs.example", {"TS_DEBUG_USE_DERP_HTTP": "1"}) and not derp_http_for(None, {})


def _wg(peer_key: NodePrivate, peer_disco: DiscoPrivate, home: int, endpoints: list[str]) -> WgConfig:
    pub = peer_key.public()
    return WgConfig(
        peers={
            pub: WgPeer(
                public_key=pub,
                allowed_ips=("100.64.0.9/32",),
                endpoint=None,
                endpoints=tuple(endpoints),
                disco_key=peer_disco.public(),
                home_derp=home,
            )
        }
    )


def test_ping_via_derp_then_direct_on_loopback():
    with Derper() as d:

        async def main():
            dm = decode(DERPMap, d.derp_map())
            keys = [(NodePrivate.generate(), DiscoPrivate.generate()) for _ in range(2)]
            ta, tb = (NodeTransport(k, dk, use_derp_http=True) for k, dk in keys)
            for t in (ta, tb):
                t.conn._local_addrs = lambda: ["127.0.0.1"]  # loopback only: the lab machine's own LAN is off limits
            await ta.start()
            await tb.start()
            try:
                nm = SimpleNamespace(derp_map=dm)
                # each knows the other's keys and home DERP but no endpoints: the first ping can only
                # go via DERP; its CallMeMaybe then lets b find a's UDP address
                ta.update(nm, _wg(keys[1][0], keys[1][1], d.region_id, []))
                tb.update(nm, _wg(keys[0][0], keys[0][1], d.region_id, []))
                for t in (ta, tb):
                    await apoll_until(lambda: t.home_derp, 5.0)  # the first netcheck picks the only region as home
                    assert t.home_derp == d.region_id and t.region_code(d.region_id) == f"lab{d.region_id}"
                addrs, types = ta.endpoints()
                assert f"127.0.0.1:{ta.port}" in addrs and len(addrs) == len(types)
                peer = next(iter(_wg(keys[1][0], keys[1][1], 0, []).peers.values()))
                assert ta.wg_endpoint(peer) == PeerEndpoint(keys[1][0].public().raw)

                nk_b = keys[1][0].public().raw
                first = await ta.ping(nk_b, timeout=5.0)
                assert first.endpoint == "" and first.derp_region == d.region_id
                assert first.derp_code == f"lab{d.region_id}"
                results = [first]
                for _ in range(20):
                    await asyncio.sleep(0.25)
                    r = await ta.ping(nk_b, timeout=5.0)
                    results.append(r)
                    if r.endpoint:
                        break
                assert results[-1].endpoint == f"127.0.0.1:{tb.port}", results
                st = ta.path(nk_b)
                assert st is not None and st.path == "direct" and st.addr == f"127.0.0.1:{tb.port}"
                with pytest.raises(KeyError):
                    await ta.ping(b"\x01" * 32, timeout=1.0)
                rep = await ta.netcheck()
                assert rep["UDP"] is True and rep["RegionCodes"] == {str(d.region_id): f"lab{d.region_id}"}
                assert ta.status()["HomeDERP"] == d.region_id
            finally:
                await ta.aclose()
                await tb.aclose()

        asyncio.run(main())


class _RecordingClient:
    """What NodeTransport publishes through a ControlClient (the real one needs a control server)."""

    def __init__(self):
        self.opts = SimpleNamespace(endpoints=())
        self.net_infos, self.derps = [], []

    def set_endpoints(self, addrs, types):
        self.opts.endpoints = tuple(addrs)

    def set_preferred_derp(self, rid):
        self.derps.append(rid)

    def set_net_info(self, ni):
        self.net_infos.append(ni)


def test_netcheck_result_is_published_as_net_info():
    """After the first netcheck the whole NetInfo goes to control (UDP works, DERP latency, home region)."""
    with Derper() as d:

        async def main():
            t = NodeTransport(NodePrivate.generate(), DiscoPrivate.generate(), use_derp_http=True)
            t.conn._local_addrs = lambda: ["127.0.0.1"]
            await t.start()
            try:
                client = _RecordingClient()
                t.attach(client)
                t.update(SimpleNamespace(derp_map=decode(DERPMap, d.derp_map())), None)
                await apoll_until(lambda: client.net_infos, 5.0)
                ni = client.net_infos[-1]
                assert ni.working_udp is True and ni.preferred_derp == d.region_id
                assert (
                    set(ni.derp_latency) == {f"{d.region_id}-v4"} and ni.mapping_varies_by_dest_ip is None
                )  # one STUN server: unknown
            finally:
                await t.aclose()

        asyncio.run(main())
