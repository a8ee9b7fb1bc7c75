"""dns-osconfig/dns-query wire types (apitype.DNSOSConfig, DNSQueryResponse, dnstype.Resolver), pure query helpers."""

from __future__ import annotations

import base64
import json

import dns.flags
import dns.message
import dns.rdatatype
import pytest
from hypothesis import given, strategies as st

from engine.dns.config import DoHUpstream, Upstream, parse_doh
from engine.ipn.dnsquery import (
    QUERY_TYPES,
    QueryError,
    build_query,
    parse_query_type,
    resolver_view,
    to_fqdn,
    type_name,
)
from engine.ipn.engine_api import DNSResolverView
from engine.localapi.schema import DNSOSConfig, DNSQueryResponse, DNSResolver, SchemaError

# Hand-written in the shape tailscaled 1.90.9 writes (encoding/json of apitype.DNSOSConfig; make()'d slices give []).
TS_OSCONFIG = '{"Nameservers":["100.100.100.100"],"SearchDomains":["tail.example.com"],"MatchDomains":[]}'
# apitype.DNSQueryResponse, hand-written: []byte as base64 (a header-only reply, id 1 + question),
# dnstype.Resolver omitempty.
TS_QUERY = (
    '{"Bytes":"AAGBgAABAAAAAAAAB2V4YW1wbGUDY29tAAABAAE=",'
    '"Resolvers":[{"Addr":"https://dns.example/dns-query","BootstrapResolution":["192.0.2.1"]},{"Addr":"192.0.2.53"}]}'
)


def test_osconfig_reads_tailscaled_json_and_writes_its_keys():
    c = DNSOSConfig.from_json(TS_OSCONFIG)
    assert c.nameservers == ["100.100.100.100"] and c.search_domains == ["tail.example.com"] and c.match_domains == []
    assert not c.applied and c.applied_nameservers == []
    d = c.to_dict()
    assert {k: d[k] for k in ("Nameservers", "SearchDomains", "MatchDomains")} == json.loads(TS_OSCONFIG)
    # our additions are extra keys a Go client ignores; empty lists stay [] (Go make()), never null
    assert DNSOSConfig().to_dict()["MatchDomains"] == [] and DNSOSConfig().to_dict()["Nameservers"] == []


def test_osconfig_round_trip_with_extensions():
    c = DNSOSConfig(
        nameservers=["198.51.100.53"],
        applied=True,
        route_all=True,
        applied_nameservers=["100.100.100.100"],
        applied_search_domains=["a.b"],
        applied_match_domains=["a.b", "corp"],
    )
    assert DNSOSConfig.from_json(c.to_json()) == c


def test_query_response_reads_tailscaled_json_exactly():
    r = DNSQueryResponse.from_json(TS_QUERY)
    msg = dns.message.from_wire(r.reply)
    assert msg.question[0].name.to_text() == "example.com." and msg.id == 1
    assert r.resolvers == [
        DNSResolver(addr="https://dns.example/dns-query", bootstrap_resolution=["192.0.2.1"]),
        DNSResolver(addr="192.0.2.53"),
    ]
    assert json.dumps(r.to_dict(), separators=(",", ":")) == TS_QUERY


def test_query_response_local_answer_and_bad_base64():
    r = DNSQueryResponse.of(b"\x00\x01\x81\x80", [])
    assert r.to_dict() == {"Bytes": base64.b64encode(b"\x00\x01\x81\x80").decode(), "Resolvers": []}
    assert DNSQueryResponse.from_dict(r.to_dict()).reply == b"\x00\x01\x81\x80"
    with pytest.raises(SchemaError, match="DNSQueryResponse.Bytes: not base64"):
        DNSQueryResponse.from_dict({"Bytes": "!!!", "Resolvers": None}).reply
    with pytest.raises(SchemaError, match="want a list"):
        DNSQueryResponse.from_dict({"Bytes": "", "Resolvers": {"Addr": "x"}})


@given(st.binary(max_size=600), st.lists(st.from_regex(r"[0-9a-z.:/\[\]]{1,30}", fullmatch=True), max_size=4))
def test_query_response_round_trip(reply, addrs):
    r = DNSQueryResponse.of(reply, [DNSResolver(addr=a) for a in addrs])
    back = DNSQueryResponse.from_json(r.to_json())
    assert back == r and back.reply == reply


@pytest.mark.parametrize(
    "text,code",
    [
        pytest.param("", 1, id="empty-is-A"),
        pytest.param("a", 1, id="lower"),
        pytest.param(" AAAA ", 28, id="spaces"),
        pytest.param("mx", 15, id="mx"),
        pytest.param("ptr", 12, id="ptr"),
        pytest.param("ALL", 255, id="all"),
        pytest.param("65", 65, id="number"),
    ],
)
def test_parse_query_type(text, code):
    assert parse_query_type(text) == code


@pytest.mark.parametrize("text", ["AXFR", "0", "65536", "A A", "-1"])
def test_parse_query_type_rejects(text):
    with pytest.raises(QueryError, match="unknown DNS message type"):
        parse_query_type(text)


def test_type_names_match_dnspython():
    for name, code in QUERY_TYPES.items():
        assert type_name(code) == name
        if name != "ALL":
            assert dns.rdatatype.from_text(name) == code
    assert type_name(65) == "TYPE65"


@pytest.mark.parametrize(
    "name,want",
    [
        ("peer1", "peer1."),
        ("Peer1.Tail.Example.COM", "peer1.tail.example.com."),
        ("a.b.", "a.b."),
        (".", "."),
        ("_sip._udp.example.com", "_sip._udp.example.com."),
    ],
)
def test_to_fqdn(name, want):
    assert to_fqdn(name) == want


@pytest.mark.parametrize(
    "name,msg",
    [
        ("", "missing 'name' parameter"),
        ("a..b", "label is empty"),
        ("x" * 64 + ".com", "> 63 octets"),
        ("a b.com", "spaces"),
        ("a\\.b", "escapes"),
        ("a." * 127 + "ab", "longer than 253"),
        ("a\x00b", "control"),
    ],
)
def test_to_fqdn_rejects(name, msg):
    with pytest.raises(QueryError, match=msg):
        to_fqdn(name)


def test_build_query_is_rd_without_edns():
    m = dns.message.from_wire(build_query("peer1.tail.example.com.", 28))
    assert m.flags == dns.flags.RD and m.edns < 0 and len(m.question) == 1
    assert m.question[0].rdtype == 28 and m.question[0].name.to_text() == "peer1.tail.example.com."


def test_resolver_view():
    assert resolver_view(Upstream("192.0.2.53")) == DNSResolverView("192.0.2.53")
    assert resolver_view(Upstream("2001:db8::53", 5353)) == DNSResolverView("[2001:db8::53]:5353")
    doh = parse_doh("http://100.64.0.3:40123/dns-query")
    assert isinstance(doh, DoHUpstream)
    assert resolver_view(doh) == DNSResolverView("http://100.64.0.3:40123/dns-query")
    boot = parse_doh("https://dns.example/dns-query", ["192.0.2.1"])
    assert resolver_view(boot) == DNSResolverView("https://dns.example/dns-query", ("192.0.2.1",))
