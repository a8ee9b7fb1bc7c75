"""Unit tests of the MagicDNS resolver core and config mapping (pure; no sockets)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import given, settings, strategies as st

from engine.dns import Drop, Forward, Reply, Resolver, Upstream, config_from_netmap, parse_upstream
from engine.dns.osconfig import OSDNSConfig, os_config_for
from engine.dns.resolvconf_file import parse_nameservers, render
from engine.dns.resolved import resolvectl_commands, resolved_available

SELF = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"], "CapMap": {}}
PEERS = [
    {"Name": "peer1.tail.example.", "Addresses": ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"]},
    {"Name": "Peer2.tail.example.", "Addresses": ["100.64.0.3/32"]},
]
DNSCFG = {
    "Proxied": True,
    "Domains": ["tail.example"],
    "Resolvers": [{"Addr": "192.0.2.53"}],
    "Routes": {"corp.example": [{"Addr": "198.51.100.53:5353"}], "records.example": []},
    "ExtraRecords": [
        {"Name": "db.records.example", "Type": "A", "Value": "10.0.0.5"},
        {"Name": "v6.records.example", "Value": "fd00::5"},
        {"Name": "bad.records.example", "Type": "A", "Value": "fd00::5"},
    ],
}


@pytest.fixture
def res() -> Resolver:
    return Resolver(config_from_netmap(SELF, PEERS, DNSCFG))


def ask(res: Resolver, name: str, rtype: str = "A", **kw):
    q = dns.message.make_query(name, rtype, **kw)
    act = res.handle(q.to_wire())
    return q, act


def answer(res, name, rtype="A"):
    q, act = ask(res, name, rtype)
    assert isinstance(act, Reply), act
    r = dns.message.from_wire(act.wire)
    assert r.id == q.id
    return r


def values(r) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_config_mapping() -> None:
    cfg = config_from_netmap(SELF, PEERS, DNSCFG)
    assert cfg.hosts["peer1.tail.example."] == ("100.64.0.2",)  # peer v6 omitted: self has v4
    assert cfg.hosts["me.tail.example."] == ("100.64.0.1", "fd7a:115c:a1e0::1")
    assert cfg.hosts["peer2.tail.example."] == ("100.64.0.3",)
    assert cfg.hosts["v6.records.example."] == ("fd00::5",)
    assert "bad.records.example." not in cfg.hosts
    assert "tail.example." in cfg.local_domains and "records.example." in cfg.local_domains
    assert "64.100.in-addr.arpa." in cfg.local_domains
    assert cfg.routes == {"corp.example.": (Upstream("198.51.100.53", 5353),)}
    assert cfg.upstreams == (Upstream("192.0.2.53"),)
    assert cfg.search == ("tail.example.",)
    with_cap = config_from_netmap({**SELF, "CapMap": {"magicdns-aaaa": None}}, PEERS, DNSCFG)
    assert with_cap.hosts["peer1.tail.example."] == ("100.64.0.2", "fd7a:115c:a1e0::2")


def test_config_from_tailcfg_dataclasses() -> None:
    from engine.tailcfg.dns import DNSConfig, DNSResolver
    from engine.tailcfg.node import Node

    me = Node(name="me.ts.example.", addresses=("100.64.0.1/32",))
    peer = Node(name="p.ts.example.", addresses=("100.64.0.9/32",))
    cfg = config_from_netmap(me, [peer], DNSConfig(proxied=True, resolvers=(DNSResolver(addr="192.0.2.1"),)))
    assert cfg.hosts["p.ts.example."] == ("100.64.0.9",)
    assert cfg.upstreams == (Upstream("192.0.2.1"),)


def test_os_upstreams_when_no_global_resolvers() -> None:
    cfg = config_from_netmap(SELF, PEERS, {**DNSCFG, "Resolvers": None}, os_upstreams=["10.0.0.53"])
    assert cfg.upstreams == (Upstream("10.0.0.53"),)


@pytest.mark.parametrize(
    "addr,want",
    [
        ("1.2.3.4", Upstream("1.2.3.4", 53)),
        ("1.2.3.4:5353", Upstream("1.2.3.4", 5353)),
        ("[2001:db8::1]:53", Upstream("2001:db8::1", 53)),
        ("2001:db8::1", Upstream("2001:db8::1", 53)),
        ("https://dns.example/dns-query", None),
        ("1.2.3.4:0", None),
        ("nonsense", None),
        ("", None),
    ],
)
def test_parse_upstream(addr, want) -> None:
    assert parse_upstream(addr) == want


def test_a_and_aaaa(res) -> None:
    r = answer(res, "peer1.tail.example.")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA and r.flags & dns.flags.QR
    assert values(r) == ["100.64.0.2"]
    assert values(answer(res, "me.tail.example.", "AAAA")) == ["fd7a:115c:a1e0::1"]
    r = answer(res, "peer1.tail.example.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and values(r) == []  # NODATA
    assert values(answer(res, "PEER2.Tail.Example.")) == ["100.64.0.3"]
    assert values(answer(res, "db.records.example.")) == ["10.0.0.5"]
    assert values(answer(res, "me.tail.example.", "ANY")) == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    r = answer(res, "peer1.tail.example.", "MX")
    assert r.rcode() == dns.rcode.NOERROR and values(r) == []


def test_short_name_via_search_domain(res) -> None:
    r = answer(res, "peer1.")
    assert values(r) == ["100.64.0.2"]
    assert r.answer[0].name.to_text() == "peer1."


def test_nxdomain_inside_magic_suffix(res) -> None:
    r = answer(res, "nope.tail.example.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert answer(res, "nope.records.example.").rcode() == dns.rcode.NXDOMAIN


def test_ptr(res) -> None:
    r = answer(res, dns.reversename.from_address("100.64.0.2").to_text(), "PTR")
    assert values(r) == ["peer1.tail.example."]
    r = answer(res, dns.reversename.from_address("fd7a:115c:a1e0::1").to_text(), "PTR")
    assert values(r) == ["me.tail.example."]
    r = answer(res, dns.reversename.from_address("100.64.9.9").to_text(), "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = answer(res, dns.reversename.from_address("10.0.0.5").to_text(), "PTR")  # ExtraRecord
    assert values(r) == ["db.records.example."]


def test_forwarding_routes(res) -> None:
    _, act = ask(res, "www.corp.example.")
    assert isinstance(act, Forward) and act.upstreams == (Upstream("198.51.100.53", 5353),)
    _, act = ask(res, "example.org.")
    assert isinstance(act, Forward) and act.upstreams == (Upstream("192.0.2.53"),)
    _, act = ask(res, dns.reversename.from_address("192.0.2.9").to_text(), "PTR")
    assert isinstance(act, Forward)


def test_finish_forward(res) -> None:
    q, act = ask(res, "example.org.")
    up = dns.message.make_response(q)
    assert res.finish_forward(act.query, up.to_wire()) == Reply(up.to_wire())
    fail = dns.message.from_wire(res.finish_forward(act.query, None).wire)
    assert fail.rcode() == dns.rcode.SERVFAIL and fail.id == q.id
    wrong = dns.message.make_response(dns.message.make_query("x.", "A"))
    assert dns.message.from_wire(res.finish_forward(act.query, wrong.to_wire()).wire).rcode() == dns.rcode.SERVFAIL


def test_no_upstreams_servfail() -> None:
    res = Resolver(config_from_netmap(SELF, PEERS, {"Proxied": True}))
    r = answer(res, "example.org.")
    assert r.rcode() == dns.rcode.SERVFAIL


def test_malformed_formerr_and_drops(res) -> None:
    q = dns.message.make_query("peer1.tail.example.", "A").to_wire()
    bad = q[:12] + b"\xff\xff\xff"  # header says 1 question, body is junk
    act = res.handle(bad)
    assert isinstance(act, Reply)
    r = dns.message.from_wire(act.wire)
    assert r.rcode() == dns.rcode.FORMERR and r.id == int.from_bytes(q[:2], "big")
    assert res.counters.formerr == 1
    assert res.handle(b"\x00" * 5) == Drop("short")
    assert res.handle(q + b"\x00" * 5000) == Drop("oversize")
    resp = dns.message.make_response(dns.message.from_wire(q)).to_wire()
    assert res.handle(resp) == Drop("not-a-query")
    assert res.counters.drops == {"short": 1, "oversize": 1, "not-a-query": 1}
    two = dns.message.make_query("a.", "A")
    two.question.append(dns.message.make_query("b.", "A").question[0])
    assert dns.message.from_wire(res.handle(two.to_wire()).wire).rcode() == dns.rcode.FORMERR


def test_notimp_for_other_opcodes(res) -> None:
    q = dns.message.make_query("peer1.tail.example.", "A")
    q.set_opcode(dns.opcode.UPDATE)
    act = res.handle(q.to_wire())
    assert dns.message.from_wire(act.wire).rcode() == dns.rcode.NOTIMP


def test_edns_echoed(res) -> None:
    q = dns.message.make_query("peer1.tail.example.", "A", use_edns=0, payload=1232)
    r = dns.message.from_wire(res.handle(q.to_wire()).wire)
    assert r.edns == 0


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_never_raises(data: bytes) -> None:
    res = Resolver(config_from_netmap(SELF, PEERS, DNSCFG))
    act = res.handle(data)
    assert isinstance(act, (Reply, Forward, Drop))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_header_plus_junk(junk: bytes) -> None:
    res = Resolver(config_from_netmap(SELF, PEERS, DNSCFG))
    q = dns.message.make_query("peer1.tail.example.", "A").to_wire()
    res.handle(q[:12] + junk)
    res.finish_forward(q, q[:2] + junk)


def test_resolv_conf_render_parse() -> None:
    text = render(OSDNSConfig(("100.100.100.100",), ("tail.example",)))
    assert "nameserver 100.100.100.100" in text and "search tail.example" in text
    assert parse_nameservers(text + "nameserver fe80::1%eth0\n") == ["100.100.100.100", "fe80::1"]


def test_os_config_for(res) -> None:
    c = os_config_for(res.config)
    assert c.nameservers == ("100.100.100.100",) and c.search_domains == ("tail.example",)
    assert "tail.example" in c.match_domains and not any(d.endswith("arpa") for d in c.match_domains)


def test_resolvectl_commands() -> None:
    cfg = OSDNSConfig(("100.100.100.100", "fd7a:115c:a1e0::53"), ("tail.example",), ("tail.example", "corp.example"))
    assert resolvectl_commands("tun0", cfg) == [
        ["resolvectl", "dns", "tun0", "100.100.100.100", "fd7a:115c:a1e0::53"],
        ["resolvectl", "domain", "tun0", "tail.example", "~corp.example", "~."],
        ["resolvectl", "default-route", "tun0", "true"],
        ["resolvectl", "llmnr", "tun0", "no"],
        ["resolvectl", "mdns", "tun0", "no"],
        ["resolvectl", "dnssec", "tun0", "no"],
        ["resolvectl", "dnsovertls", "tun0", "no"],
    ]
    split = OSDNSConfig(("100.100.100.100",), (), ("corp.example",), route_all=False)
    assert resolvectl_commands("tun0", split)[1:3] == [
        ["resolvectl", "domain", "tun0", "~corp.example"],
        ["resolvectl", "default-route", "tun0", "false"],
    ]
    assert resolvectl_commands("tun0", None) == [["resolvectl", "revert", "tun0"]]


def test_resolved_detection(tmp_path) -> None:
    etc = tmp_path / "etc-resolv.conf"
    etc.write_text(
        "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n"
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    yes = dict(which=lambda n: "/usr/bin/resolvectl", etc_resolv=etc)
    assert not resolved_available(run, **yes)  # resolved not running (no runtime resolv.conf)
    (run / "resolv.conf").write_text("")
    assert resolved_available(run, **yes)
    assert not resolved_available(run, which=lambda n: None, etc_resolv=etc)
    etc.write_text("nameserver 192.0.2.53\n")  # resolved runs, but the system does not use it ("foreign")
    assert not resolved_available(run, **yes)
    etc.write_text("nameserver 127.0.0.53\n")  # the stub, no banner
    assert resolved_available(run, **yes)
    etc.unlink()
    (run / "stub-resolv.conf").write_text("nameserver 192.0.2.1\n")
    fake_run = tmp_path / "run" / "systemd" / "resolve"
    fake_run.mkdir(parents=True)
    (fake_run / "stub-resolv.conf").write_text("nameserver 192.0.2.1\n")
    etc.symlink_to(fake_run / "stub-resolv.conf")  # a link into resolved's runtime dir
    assert resolved_available(run, **yes)
    etc.unlink()
    assert not resolved_available(run, **yes)  # no /etc/resolv.conf at all


def test_resolved_configurator_calls() -> None:
    from engine.dns.resolved import ResolvedConfigurator

    calls = []
    rc = ResolvedConfigurator("tun0", lambda argv, **kw: calls.append(list(argv)) or "")
    cfg = OSDNSConfig(("100.100.100.100",), ("tail.example",))
    rc.set(cfg)
    rc.set(cfg)  # idempotent: no second round of commands
    assert len(calls) == 8 and calls[-1] == ["resolvectl", "flush-caches"]
    rc.set(None)
    assert calls[-2:] == [["resolvectl", "revert", "tun0"], ["resolvectl", "flush-caches"]]


def test_reply_cache_keeps_ids_counters_and_follows_config() -> None:
    """The same question again is answered from the cache: with its own id, counted, and never stale."""
    r = Resolver(config_from_netmap(SELF, PEERS, DNSCFG))
    q1 = dns.message.make_query("peer1.tail.example.", "A")
    q2 = dns.message.make_query("peer1.tail.example.", "A")
    q2.id = (q1.id + 1) % 65536
    a1, a2 = r.handle(q1.to_wire()), r.handle(q2.to_wire())
    assert isinstance(a1, Reply) and isinstance(a2, Reply)
    m1, m2 = dns.message.from_wire(a1.wire), dns.message.from_wire(a2.wire)
    assert m1.id == q1.id and m2.id == q2.id and m1.answer == m2.answer and a1.wire[2:] == a2.wire[2:]
    assert r.counters.local == 2
    nx = dns.message.make_query("nobody.tail.example.", "A")
    r.handle(nx.to_wire())
    r.handle(nx.to_wire())
    assert r.counters.nxdomain == 2
    # TCP and UDP answers are kept apart (truncation differs), and a new config forgets every answer
    assert isinstance(r.handle(q1.to_wire(), tcp=True), Reply)
    moved = [dict(p) for p in PEERS]
    moved[0] = {**moved[0], "Addresses": ["100.64.9.9/32"]}
    r.set_config(config_from_netmap(SELF, moved, DNSCFG))
    got = dns.message.from_wire(r.handle(q1.to_wire()).wire)
    assert [rd.to_text() for rrset in got.answer for rd in rrset] == ["100.64.9.9"]
