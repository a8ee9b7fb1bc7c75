"""TailnetEngine passes the chosen exit node to MagicDNS (a real DNSManager, no listeners) and switches upstreams."""

from __future__ import annotations

from engine.control.mapsession import MapSession
from engine.dns import Upstream
from engine.tailcfg import Hostinfo, MapResponse
from engine.tailcfg.codec import decode
from engine.tailcfg.dns import DNSConfig
from engine.tailcfg.node import Node
from engine.types.keys import NodePublic
from tests.unit.ipn.harness import config, deliver, reconfigure, run, running
from tests.unit.wgengine.fakes import NOW, FakeWorld


def tnode(i: int, **kw) -> Node:
    return decode(
        Node,
        {
            "ID": i,
            "StableID": f"n{i}",
            "Name": f"node{i}.tail.example.",
            "Cap": 130,
            "Key": str(NodePublic(bytes([i]) * 32)),
            "Addresses": [f"100.64.0.{i}/32"],
            **kw,
        },
    )


def exit_node(i: int) -> Node:
    """A peer offering an exit node that can proxy DNS (capver 130) on its peerAPI port 4100 + i."""
    return tnode(
        i,
        AllowedIPs=[f"100.64.0.{i}/32", "0.0.0.0/0", "::/0"],
        Hostinfo={"Services": [{"Proto": "peerapi4", "Port": 4100 + i}]},
    )


def test_engine_switches_dns_with_the_exit_node() -> None:
    async def t():
        me, ex2, ex3 = tnode(1), exit_node(2), exit_node(3)
        assert isinstance(ex2.hostinfo, Hostinfo)
        nm = MapSession().apply(
            MapResponse(node=me, peers=(ex2, ex3), dns_config=decode(DNSConfig, {"Proxied": True})), now=NOW
        )
        w = FakeWorld(os_nameservers=("192.168.1.1",))  # the LAN's resolver
        eng, w, events, _ = await running(world=w, real_dns=True)
        dns = eng._s.engine.dns
        assert dns is w.objs["dns"] and eng.debug_status()["MagicDNS"] is True

        def upstreams() -> list[str]:
            return [str(u) for u in dns.resolver.config.upstreams]

        os_default = (Upstream("192.168.1.1"),)
        deliver(eng, nm)
        assert dns.resolver.config.upstreams == os_default and not dns.resolver.config.via_exit_node
        assert await reconfigure(eng, events, config(exit_node_id="n2")) == []
        assert upstreams() == ["http://100.64.0.2:4102/dns-query"] and dns.resolver.config.via_exit_node
        await reconfigure(eng, events, config(exit_node_id="n3"))
        assert upstreams() == ["http://100.64.0.3:4103/dns-query"]
        await reconfigure(eng, events, config())
        assert dns.resolver.config.upstreams == os_default
        # not in the netmap: tailscale's FallbackResolvers (none) then the OS's
        await reconfigure(eng, events, config(exit_node_id="n9"))
        assert dns.resolver.config.upstreams == os_default and not dns.resolver.config.via_exit_node
        assert eng.dns_os_config().base_nameservers == ("192.168.1.1",)
        await eng.aclose()
        assert w.log.of("osdns", "set")[-1] == (None,), "OS DNS restored"

    run(t())
