"""Hostile search/split-DNS domains from the control server never reach resolv.conf or resolvectl arguments."""

from __future__ import annotations

import logging

import pytest

from engine.dns.config import config_from_netmap
from engine.dns.guard import TCP_LIMIT_SOURCE, TCP_LIMIT_TOTAL, ArrivalGuard, ConnLimiter
from engine.dns.names import check_domain, ip_literals, valid_domains
from engine.dns.osconfig import OSDNSConfig, os_config_for
from engine.dns.resolvconf_file import ResolvConfFile, render
from engine.dns.resolved import resolvectl_commands
from engine.dns.server import pktinfo_ifindex
from engine.router.inputfw import InputConfig, input_chain
from engine.router.nft import ForwardConfig, ruleset

HOSTILE = [
    "evil.example\nnameserver 203.0.113.66",  # a second line in resolv.conf
    "-h",  # an option to resolvectl
    "--set-dns=203.0.113.66",
    "two words.example",
    "tab\there.example",
    "options ndots:15",
    "semi;colon.example",
    "a..b.example",
    ".",
    "",
    "x" * 64 + ".example",  # label too long
    ("a" * 62 + ".") * 5,  # name too long
    "bad-.example",
    "ümlaut.example",
    "nul\x00.example",
    42,
    None,
]
GOOD = ["corp.example", "Tail.Example.", "_srv.x-y.example", "a1.b2"]


@pytest.mark.parametrize("name", HOSTILE)
def test_check_domain_refuses(name) -> None:
    with pytest.raises(ValueError):
        check_domain(name)


def test_check_domain_normalises() -> None:
    assert [check_domain(n) for n in GOOD] == ["corp.example", "tail.example", "_srv.x-y.example", "a1.b2"]


def test_valid_domains_skips_and_logs_bad_ones(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert valid_domains(HOSTILE + GOOD) == ["corp.example", "tail.example", "_srv.x-y.example", "a1.b2"]
    assert "ignoring invalid search domain '-h'" in caplog.text
    assert valid_domains("corp.example") == ["corp.example"]  # a lone string is one name, not characters
    assert ip_literals(["100.100.100.100", "1.2.3.4\nsearch x", "-x", "fd7a:115c:a1e0::53"]) == [
        "100.100.100.100",
        "fd7a:115c:a1e0::53",
    ]


def _hostile_netmap_config():
    self_node = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]}
    dns = {
        "Proxied": True,
        "Domains": HOSTILE[:10] + ["corp.example"],
        "Routes": {"ok.example": [{"Addr": "192.0.2.54"}], "-x\nsearch evil": [{"Addr": "192.0.2.55"}], "--flag": []},
        "Resolvers": [{"Addr": "192.0.2.53"}],
    }
    return config_from_netmap(self_node, [], dns)


def test_config_from_netmap_keeps_only_valid_domains() -> None:
    cfg = _hostile_netmap_config()
    assert cfg.search == ("corp.example.",)
    assert list(cfg.routes) == ["ok.example."]
    assert all(not d.startswith("-") for d in cfg.local_domains)
    os_cfg = os_config_for(cfg)
    assert os_cfg.search_domains == ("corp.example",)
    assert "tail.example" in os_cfg.match_domains and "ok.example" in os_cfg.match_domains


def test_render_and_resolvectl_refuse_hostile_domains_given_directly() -> None:
    """Second line: even an OSDNSConfig built elsewhere cannot inject lines or options."""
    cfg = OSDNSConfig(
        nameservers=("100.100.100.100", "1.1.1.1\noptions debug"),
        search_domains=tuple(HOSTILE[:10]) + ("corp.example",),
        match_domains=("-h", "ok.example", "a b"),
    )
    text = render(cfg)
    assert text.splitlines()[1:] == ["nameserver 100.100.100.100", "search corp.example"]
    cmds = resolvectl_commands("tun0", cfg)
    assert cmds[0] == ["resolvectl", "dns", "tun0", "100.100.100.100"]
    assert cmds[1] == ["resolvectl", "domain", "tun0", "corp.example", "~ok.example", "~."]
    for argv in cmds:
        assert all(a == argv[0] or not a.startswith("-") for a in argv)
    with pytest.raises(ValueError):
        resolvectl_commands("-tun0", cfg)


def test_resolv_conf_writer_with_hostile_domain_list(tmp_path) -> None:
    """The file written for a hostile netmap: one nameserver line, one search line with the good domain."""
    etc = tmp_path / "resolv.conf"
    etc.write_text("nameserver 192.0.2.53\n")
    rc = ResolvConfFile(path=etc, journal_dir=tmp_path / "run")
    rc.set(os_config_for(_hostile_netmap_config()))
    lines = etc.read_text().splitlines()
    assert lines[1:] == ["nameserver 100.100.100.100", "search corp.example"]
    assert "203.0.113.66" not in etc.read_text() and "evil" not in etc.read_text()
    rc.restore()
    assert etc.read_text() == "nameserver 192.0.2.53\n"


# -- pure parts of the firewall and the DNS server's admission ---------------------------------


def test_input_chain_rules() -> None:
    lines = "\n".join(input_chain(InputConfig("mesh0")))
    assert 'ip daddr 100.100.100.100 iifname != { "lo", "mesh0" } counter drop' in lines
    assert 'ip6 daddr fd7a:115c:a1e0::53 iifname != { "lo", "mesh0" } counter drop' in lines
    assert 'iifname "lo" fib saddr type local accept' in lines
    assert 'iifname != "mesh0" ip saddr 100.64.0.0/10 counter drop' in lines
    # the loopback exception comes before the CGNAT drop
    assert lines.index("fib saddr") < lines.index("100.64.0.0/10")
    with pytest.raises(ValueError):
        input_chain(InputConfig('x" ; flush ruleset'))


def test_one_table_holds_both_parts() -> None:
    both = ruleset(ForwardConfig("mesh0"), InputConfig("mesh0"))
    assert both.count("table inet meshvpn {") == 1
    assert "chain input" in both and "chain forward" in both and "chain postrouting" in both
    only_input = ruleset(None, InputConfig("mesh0"))
    assert "chain input" in only_input and "chain forward" not in only_input


def test_pktinfo_ifindex() -> None:
    import socket
    import struct

    v4 = (socket.IPPROTO_IP, 8, struct.pack("=i4s4s", 7, b"\0" * 4, b"\0" * 4))
    v6 = (socket.IPPROTO_IPV6, 50, b"\0" * 16 + struct.pack("=I", 9))
    assert pktinfo_ifindex([v4]) == 7 and pktinfo_ifindex([v6]) == 9
    assert pktinfo_ifindex([]) is None and pktinfo_ifindex([(socket.IPPROTO_IP, 8, b"\1")]) is None


def test_arrival_guard() -> None:
    now = [0.0]
    holders = {"n": {5}}
    g = ArrivalGuard(
        ["100.100.100.100"],
        holders=lambda _a: holders["n"],
        route=lambda ip: {"100.64.0.2": 5}.get(ip, 3),
        clock=lambda: now[0],
    )
    g.refresh()
    assert g.ifindex_ok(1) and g.ifindex_ok(5)  # lo, the TUN
    assert not g.ifindex_ok(3) and not g.ifindex_ok(None)  # the LAN; no pktinfo
    assert g.peer_ok("100.64.0.2") and not g.peer_ok("192.0.2.9")
    holders["n"] = {6}  # TUN re-created: picked up by a refresh (at most once a second)
    now[0] = 5.0
    assert g.ifindex_ok(6)


def test_conn_limiter() -> None:
    lim = ConnLimiter(total=3, per_source=2)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    assert lim.acquire("a") == TCP_LIMIT_SOURCE
    assert lim.acquire("b") is None
    assert lim.acquire("c") == TCP_LIMIT_TOTAL
    lim.release("a")
    assert lim.acquire("c") is None
    lim.release("zzz")  # unknown: ignored
    assert lim.count == 3
