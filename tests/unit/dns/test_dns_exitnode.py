"""Unit tests (pure): which exit node can proxy DNS, its peerAPI DoH URL, and the DNS config while using it."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from engine.dns import DoHUpstream, Forward, Reply, Resolver, Upstream, config_from_netmap, parse_upstream
from engine.dns.exitdns import exit_node_doh_url, peer_api_base, peer_api_ports, peer_can_proxy_dns
from engine.dns.forwarder import mark_truncated_for_udp
from engine.tailcfg.codec import decode
from engine.tailcfg.dns import DNSConfig
from engine.tailcfg.node import Node

SELF = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]}
SELF_V4 = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]}
SELF_V6 = {"Name": "me.tail.example.", "Addresses": ["fd7a:115c:a1e0::1/128"]}


def node(name="exit", addrs=("100.64.0.9/32", "fd7a:115c:a1e0::9/128"), cap=None, services=(), **extra) -> dict:
    n = {
        "Name": f"{name}.tail.example.",
        "Addresses": list(addrs),
        "Hostinfo": {"Services": [{"Proto": p, "Port": port} for p, port in services]},
    }
    if cap is not None:
        n["Cap"] = cap
    n.update(extra)
    return n


PEERAPI = (("peerapi4", 41001), ("peerapi6", 41002))
EXIT = node(cap=130, services=PEERAPI)
EXIT_DOH = "http://100.64.0.9:41001/dns-query"


# -- which peer can proxy DNS (tailscale peerCanProxyDNS) --------------------------------------
@pytest.mark.parametrize(
    "peer,want",
    [
        pytest.param(node(cap=26), True, id="cap26"),
        pytest.param(node(cap=130), True, id="cap130"),
        pytest.param(node(cap=25), False, id="cap25_no_service"),
        pytest.param(node(services=(("peerapi-dns-proxy", 1),)), True, id="no_cap_dns_service"),
        pytest.param(node(services=(("peerapi-dns-proxy", 0),)), False, id="dns_service_port0"),
        pytest.param(node(services=(("peerapi4", 41001),)), False, id="no_cap_only_peerapi"),
        pytest.param(node(cap=25, services=(("peerapi-dns-proxy", 1),)), True, id="old_cap_with_service"),
        pytest.param(None, False, id="none"),
    ],
)
def test_peer_can_proxy_dns(peer, want) -> None:
    assert peer_can_proxy_dns(peer) is want


def test_peer_api_ports_last_wins_and_junk_skipped() -> None:
    n = node(services=(("peerapi4", 1), ("peerapi4", 2), ("peerapi6", 3), ("tcp", 22)))
    n["Hostinfo"]["Services"] += [{"Proto": "peerapi6", "Port": "x"}, {"Proto": "peerapi6", "Port": 70000}, "junk"]
    assert peer_api_ports(n) == (2, 3)
    assert peer_api_ports(node()) == (0, 0)
    assert peer_api_ports({"Name": "x"}) == (0, 0)


# -- its peerAPI base (tailscale peerAPIBase) ---------------------------------------------------
@pytest.mark.parametrize(
    "self_addrs,peer,want",
    [
        pytest.param(SELF["Addresses"], EXIT, "http://100.64.0.9:41001", id="dual_stack_prefers_v4"),
        pytest.param(SELF_V4["Addresses"], EXIT, "http://100.64.0.9:41001", id="v4_only"),
        pytest.param(SELF_V6["Addresses"], EXIT, "http://[fd7a:115c:a1e0::9]:41002", id="v6_only"),
        pytest.param(
            SELF["Addresses"],
            node(services=(("peerapi6", 41002),)),
            "http://[fd7a:115c:a1e0::9]:41002",
            id="peer_only_peerapi6",
        ),
        pytest.param(SELF_V4["Addresses"], node(services=(("peerapi6", 41002),)), None, id="no_common_family"),
        pytest.param(
            SELF["Addresses"],
            node(addrs=("fd7a:115c:a1e0::9/128",), services=PEERAPI),
            None,
            id="peerapi4_but_peer_has_no_v4",
        ),
        pytest.param(SELF["Addresses"], node(), None, id="no_peerapi"),
        pytest.param(["100.64.0.0/10"], EXIT, None, id="only_non_single_ip_prefixes"),
    ],
)
def test_peer_api_base(self_addrs, peer, want) -> None:
    assert peer_api_base(self_addrs, peer) == want


def test_exit_node_doh_url() -> None:
    assert exit_node_doh_url(SELF["Addresses"], EXIT) == EXIT_DOH
    assert exit_node_doh_url(SELF["Addresses"], node(cap=25, services=PEERAPI)) is None
    assert exit_node_doh_url(SELF["Addresses"], node(cap=130)) is None


def test_tailcfg_dataclasses_work_too() -> None:
    n = decode(
        Node,
        {
            "ID": 9,
            "StableID": "n9",
            "Name": "exit.tail.example.",
            "Cap": 130,
            "Addresses": ["100.64.0.9/32"],
            "Hostinfo": {"Services": [{"Proto": "peerapi4", "Port": 41001}]},
        },
    )
    me = decode(Node, {"ID": 1, "Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]})
    assert peer_can_proxy_dns(n)
    cfg = config_from_netmap(me, [n], decode(DNSConfig, {"Proxied": True}), exit_node=n)
    assert [str(u) for u in cfg.upstreams] == [EXIT_DOH]


# -- DoH resolver addresses ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "addr,boot,want",
    [
        pytest.param(
            "http://100.64.0.9:41001/dns-query",
            (),
            DoHUpstream("http://100.64.0.9:41001/dns-query", "100.64.0.9:41001", 41001, "/dns-query", ("100.64.0.9",)),
            id="peerapi",
        ),
        pytest.param(
            "http://[fd7a:115c:a1e0::9]:41002/dns-query",
            (),
            DoHUpstream(
                "http://[fd7a:115c:a1e0::9]:41002/dns-query",
                "[fd7a:115c:a1e0::9]:41002",
                41002,
                "/dns-query",
                ("fd7a:115c:a1e0::9",),
            ),
            id="peerapi_v6",
        ),
        pytest.param(
            "https://1.1.1.1/dns-query",
            (),
            DoHUpstream("https://1.1.1.1/dns-query", "1.1.1.1", 443, "/dns-query", ("1.1.1.1",), tls=True),
            id="https_ip",
        ),
        pytest.param(
            "https://dns.google/dns-query",
            ("8.8.8.8", "junk", "8.8.4.4"),
            DoHUpstream(
                "https://dns.google/dns-query", "dns.google", 443, "/dns-query", ("8.8.8.8", "8.8.4.4"), tls=True
            ),
            id="https_bootstrap",
        ),
        pytest.param(
            "http://10.0.0.1/q?x=1",
            (),
            DoHUpstream("http://10.0.0.1/q?x=1", "10.0.0.1", 80, "/q?x=1", ("10.0.0.1",)),
            id="query_kept",
        ),
        pytest.param("https://dns.google/dns-query", (), None, id="https_name_without_bootstrap"),
        pytest.param("http://100.64.0.9:0/dns-query", (), None, id="port0"),
        pytest.param("http://100.64.0.9:99999/dns-query", (), None, id="port_out_of_range"),
        pytest.param("http://user@100.64.0.9/dns-query", (), None, id="userinfo"),
        pytest.param("http:///dns-query", (), None, id="no_host"),
        pytest.param("tls://1.1.1.1", (), None, id="tls_unsupported"),
        pytest.param("/dns-query", (), None, id="bare_path_like_tailscale_without_peerapi"),
    ],
)
def test_parse_doh(addr, boot, want) -> None:
    assert parse_upstream(addr, boot) == want


def test_doh_server_name() -> None:
    assert parse_upstream("https://[2606:4700::1111]:8443/dns-query").server_name == "2606:4700::1111"
    assert parse_upstream("https://dns.google:8443/q", ["8.8.8.8"]).server_name == "dns.google"


# -- the config while using an exit node (tailscale dnsConfigForNetmap) -------------------------
DNSCFG = {
    "Proxied": True,
    "Domains": ["tail.example"],
    "Resolvers": [{"Addr": "192.0.2.53"}],
    "FallbackResolvers": [{"Addr": "198.51.100.1"}],
    "Routes": {
        "corp.example": [{"Addr": "10.1.1.53"}],
        "mixed.example": [{"Addr": "10.2.2.53"}, {"Addr": "10.3.3.53", "UseWithExitNode": True}],
        "records.example": [],
    },
}


def cfg_with(dns_cfg, exit_node, self_node=SELF, **kw):
    return config_from_netmap(
        self_node, [exit_node] if exit_node else [], dns_cfg, exit_node=exit_node, os_upstreams=["192.168.1.1"], **kw
    )


def test_without_exit_node_unchanged() -> None:
    c = cfg_with(DNSCFG, None)
    assert c.upstreams == (Upstream("192.0.2.53"),) and not c.via_exit_node
    assert set(c.routes) == {"corp.example.", "mixed.example."}


def test_exit_node_doh_replaces_default_resolvers_and_filters_routes() -> None:
    c = cfg_with(DNSCFG, EXIT)
    assert c.via_exit_node
    assert [str(u) for u in c.upstreams] == [EXIT_DOH]
    # corp.example has no UseWithExitNode resolver: dropped, the exit node resolves it
    assert dict(c.routes) == {"mixed.example.": (Upstream("10.3.3.53"),)}
    assert "records.example." in c.local_domains and "tail.example." in c.local_domains
    assert c.hosts["exit.tail.example."] == ("100.64.0.9",)


def test_exit_node_with_use_with_exit_node_default() -> None:
    d = dict(DNSCFG, Resolvers=[{"Addr": "192.0.2.53"}, {"Addr": "192.0.2.54", "UseWithExitNode": True}])
    c = cfg_with(d, EXIT)
    assert c.upstreams == (Upstream("192.0.2.54"),) and c.via_exit_node


def test_exit_node_without_global_resolvers_never_uses_the_os_resolver() -> None:
    c = cfg_with({"Proxied": True}, EXIT)
    assert [str(u) for u in c.upstreams] == [EXIT_DOH]


def test_exit_node_v6_only_self() -> None:
    c = cfg_with({"Proxied": True}, EXIT, self_node=SELF_V6)
    assert [str(u) for u in c.upstreams] == ["http://[fd7a:115c:a1e0::9]:41002/dns-query"]


def test_exit_node_can_proxy_but_no_peerapi_port_fails_closed() -> None:
    """tailscale would use the unreachable bare "/dns-query"; we have no default: SERVFAIL, no leak."""
    ex = node(cap=130)
    c = cfg_with({"Proxied": True, "Resolvers": [{"Addr": "192.0.2.53"}]}, ex)
    assert c.upstreams == () and c.via_exit_node
    res = Resolver(c)
    act = res.handle(dns.message.make_query("www.example.org", "A").to_wire())
    assert isinstance(act, Reply) and dns.message.from_wire(act.wire).rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    "dns_cfg,exit_node,using,want",
    [
        pytest.param(DNSCFG, node(cap=20), None, (Upstream("192.0.2.53"),), id="old_exit_global_resolvers"),
        pytest.param(
            {"FallbackResolvers": [{"Addr": "198.51.100.1"}]},
            node(cap=20),
            None,
            (Upstream("198.51.100.1"),),
            id="old_exit_fallback_before_os",
        ),
        pytest.param({}, node(cap=20), None, (Upstream("192.168.1.1"),), id="old_exit_nothing_else_os"),
        pytest.param(
            {"FallbackResolvers": [{"Addr": "198.51.100.1"}]},
            None,
            True,
            (Upstream("198.51.100.1"),),
            id="exit_chosen_not_in_netmap",
        ),
        pytest.param(
            {"FallbackResolvers": [{"Addr": "198.51.100.1"}]},
            None,
            None,
            (Upstream("192.168.1.1"),),
            id="no_exit_os_first",
        ),
        pytest.param(
            {"FallbackResolvers": [{"Addr": "198.51.100.1"}]},
            node(cap=20, IsWireGuardOnly=True, ExitNodeDNSResolvers=[{"Addr": "203.0.113.53"}]),
            None,
            (Upstream("203.0.113.53"),),
            id="wireguard_only_exit_resolvers",
        ),
    ],
)
def test_exit_node_that_cannot_proxy_dns(dns_cfg, exit_node, using, want) -> None:
    c = cfg_with(dns_cfg, exit_node, using_exit_node=using)
    assert c.upstreams == want and not c.via_exit_node


def test_old_exit_node_keeps_split_routes() -> None:
    c = cfg_with(DNSCFG, node(cap=20))
    assert set(c.routes) == {"corp.example.", "mixed.example."}


def test_resolver_forwards_to_doh() -> None:
    res = Resolver(cfg_with({"Proxied": True}, EXIT))
    act = res.handle(dns.message.make_query("www.example.org", "A").to_wire())
    assert isinstance(act, Forward) and [str(u) for u in act.upstreams] == [EXIT_DOH]
    act = res.handle(dns.message.make_query("exit.tail.example", "A").to_wire())
    assert isinstance(act, Reply)  # tailnet names stay local


# -- UDP size for DoH replies -------------------------------------------------------------------
def _big_reply(q: dns.message.Message, n: int) -> bytes:
    r = dns.message.make_response(q)
    for i in range(n):
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", f"10.0.{i // 256}.{i % 256}"))
    return r.to_wire()


def test_mark_truncated_for_udp() -> None:
    q = dns.message.make_query("big.example", "A")
    small, big = _big_reply(q, 2), _big_reply(q, 60)
    assert len(big) > 512
    assert mark_truncated_for_udp(small, q.to_wire()) == small
    tc = mark_truncated_for_udp(big, q.to_wire())
    assert tc[2] & 0x02 and tc[3:] == big[3:] and tc[:2] == big[:2]
    qe = dns.message.make_query("big.example", "A", use_edns=0, payload=4096)
    assert mark_truncated_for_udp(_big_reply(qe, 60), qe.to_wire()) == _big_reply(qe, 60)
