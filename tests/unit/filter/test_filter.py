"""Table tests and fuzz for engine.filter against tailscale's documented filter semantics."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st

from engine.filter import ACCEPT, DROP, DropReason, Filter, FilterRuleError, compile_rules, parse, parse_ip_set
from engine.filter.rules import concat_packet_filters
from tests.unit.filter.pkt import icmp, ip, raw, tcp, udp

ME4, ME6 = "100.64.0.1", "fd7a:115c:a1e0::1"
PEER4, PEER6 = "100.64.0.2", "fd7a:115c:a1e0::2"
OTHER4 = "100.64.0.3"
LOCAL = [ME4 + "/32", ME6 + "/128", "10.1.0.0/24"]

RULES = [
    # peer may reach ssh and 8000-8010 on me, v4 and v6
    {
        "SrcIPs": [PEER4, PEER6],
        "DstPorts": [
            {"IP": ME4, "Ports": {"First": 22, "Last": 22}},
            {"IP": ME6, "Ports": {"First": 22, "Last": 22}},
            {"IP": "*", "Ports": {"First": 8000, "Last": 8010}},
        ],
    },
    # a range source, reach the subnet on any port
    {"SrcIPs": ["100.64.0.10-100.64.0.20"], "DstPorts": [{"IP": "10.1.0.0/24", "Ports": {"First": 0, "Last": 65535}}]},
    # GRE (47) from the peer, all ports
    {"SrcIPs": [PEER4], "DstPorts": [{"IP": ME4, "Ports": {"First": 0, "Last": 65535}}], "IPProto": [47]},
    # proto 50 with a port restriction never matches a portless protocol
    {"SrcIPs": [PEER4], "DstPorts": [{"IP": ME4, "Ports": {"First": 1, "Last": 65535}}], "IPProto": [50]},
    # a capability source: ignored (never matches)
    {"SrcIPs": ["cap:some-cap"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]},
]


@pytest.fixture
def flt() -> Filter:
    f, errors = Filter.from_rules(RULES, LOCAL)
    assert errors == []
    return f


IN_CASES = [
    pytest.param(b"", ACCEPT, id="zero_len_keepalive"),
    pytest.param(b"\x45" + b"\0" * 10, DROP, id="too_short"),
    pytest.param(tcp(PEER4, ME4, 1234, 22), ACCEPT, id="tcp_syn_allowed_port"),
    pytest.param(tcp(PEER4, ME4, 1234, 23), DROP, id="tcp_syn_denied_port"),
    pytest.param(tcp(OTHER4, ME4, 1234, 22), DROP, id="tcp_syn_denied_src"),
    pytest.param(tcp(OTHER4, ME4, 1234, 23, flags=0x10), ACCEPT, id="tcp_ack_always"),
    pytest.param(tcp(OTHER4, ME4, 1234, 23, flags=0x12), ACCEPT, id="tcp_synack_always"),
    pytest.param(tcp(PEER4, ME4, 1, 8005), ACCEPT, id="tcp_star_dst_range"),
    pytest.param(tcp(PEER6, ME6, 1, 22), ACCEPT, id="tcp6_allowed"),
    pytest.param(tcp(PEER6, ME6, 1, 23), DROP, id="tcp6_denied"),
    pytest.param(tcp(PEER4, "100.64.0.99", 1, 22), DROP, id="dst_not_local"),
    pytest.param(tcp(PEER4, "10.1.0.5", 1, 22, flags=0x10), ACCEPT, id="subnet_non_syn"),
    pytest.param(tcp("100.64.0.15", "10.1.0.5", 1, 443), ACCEPT, id="range_src_subnet"),
    pytest.param(tcp("100.64.0.21", "10.1.0.5", 1, 443), DROP, id="range_src_outside"),
    pytest.param(udp(PEER4, ME4, 5000, 8000), ACCEPT, id="udp_rule"),
    pytest.param(udp(PEER4, ME4, 5000, 53), DROP, id="udp_no_rule"),
    pytest.param(icmp(OTHER4, ME4, 0), ACCEPT, id="icmp_echo_reply"),
    pytest.param(icmp(OTHER4, ME4, 3, 1), ACCEPT, id="icmp_unreachable"),
    pytest.param(icmp(OTHER4, ME4, 11), ACCEPT, id="icmp_time_exceeded"),
    pytest.param(icmp(OTHER4, ME4, 8), DROP, id="icmp_echo_req_no_rule"),
    pytest.param(icmp(PEER4, ME4, 8), ACCEPT, id="icmp_echo_req_rule_ips"),
    pytest.param(icmp(PEER6, ME6, 128), ACCEPT, id="icmp6_echo_req"),
    pytest.param(icmp(OTHER4, ME6.replace("::1", "::9"), 129), DROP, id="icmp_mixed_family_junk"),
    pytest.param(icmp("fd7a:115c:a1e0::9", ME6, 129), ACCEPT, id="icmp6_echo_reply"),
    pytest.param(icmp("fd7a:115c:a1e0::9", ME6, 2), ACCEPT, id="icmp6_too_big"),
    pytest.param(icmp("fd7a:115c:a1e0::9", ME6, 128), DROP, id="icmp6_echo_req_no_rule"),
    pytest.param(raw(OTHER4, ME4, 99), ACCEPT, id="tsmp"),
    pytest.param(raw(PEER4, ME4, 47), ACCEPT, id="gre_all_ports_rule"),
    pytest.param(raw(OTHER4, ME4, 47), DROP, id="gre_wrong_src"),
    pytest.param(raw(PEER4, ME4, 50), DROP, id="esp_rule_not_all_ports"),
    pytest.param(raw(PEER4, ME4, 4), DROP, id="other_proto_no_rule"),
    pytest.param(udp(PEER4, "224.0.0.251", 5353, 5353), DROP, id="multicast4"),
    pytest.param(udp(PEER6, "ff02::fb", 5353, 5353), DROP, id="multicast6"),
    pytest.param(tcp(PEER4, "169.254.1.1", 1, 22), DROP, id="link_local4"),
    pytest.param(tcp(PEER6, "fe80::1", 1, 22), DROP, id="link_local6"),
    pytest.param(tcp(PEER4, "169.254.169.254", 1, 80, 0x10), DROP, id="metadata_passes_pre_but_not_local"),
    pytest.param(ip(PEER4, ME4, (6, b"\0" * 8)), DROP, id="tcp_truncated_header"),
    pytest.param(tcp(PEER4, ME4, 1, 22)[:-4], DROP, id="ip_total_len_exceeds_buffer"),
    pytest.param(ip(PEER4, ME4, (6, b"\0" * 40), frag=0x0000 | 20), ACCEPT, id="later_fragment"),
    pytest.param(ip(PEER4, ME4, (6, b"\0" * 40), frag=5), DROP, id="fragment_at_low_offset"),
    pytest.param(ip(PEER4, ME4, (6, b"\0" * 8), frag=0x2000), DROP, id="tiny_first_fragment"),
    pytest.param(b"\x70" + b"\0" * 40, DROP, id="not_ip"),
]


@pytest.mark.parametrize("pkt,want", IN_CASES)
def test_check_in(flt: Filter, pkt: bytes, want) -> None:
    assert flt.check_in(pkt) is want, flt.explain_in(pkt)


@pytest.mark.parametrize("pkt,want", IN_CASES)
def test_check_in_memoryview(flt: Filter, pkt: bytes, want) -> None:
    assert flt.check_in(memoryview(bytearray(pkt))) is want


def test_drops_counted_by_reason(flt: Filter) -> None:
    flt.check_in(tcp(PEER4, ME4, 1, 23))
    flt.check_in(tcp(PEER4, "100.64.0.99", 1, 22))
    flt.check_in(udp(PEER4, "224.0.0.251", 1, 2))
    flt.check_in(b"\x45")
    flt.check_in(tcp(PEER4, ME4, 1, 22))
    assert flt.drops[DropReason.NO_RULE] == 1
    assert flt.drops[DropReason.DST_NOT_LOCAL] == 1
    assert flt.drops[DropReason.MULTICAST] == 1
    assert flt.drops[DropReason.TOO_SHORT] == 1
    assert flt.accepted_in == 1


def test_outbound_always_accepted_and_udp_reply_allowed(flt: Filter) -> None:
    reply = udp("100.64.0.77", ME4, 53, 40000)
    assert flt.check_in(reply) is DROP
    assert flt.check_out(udp(ME4, "100.64.0.77", 40000, 53)) is ACCEPT
    assert flt.check_in(reply) is ACCEPT
    # a different source port is a different flow
    assert flt.check_in(udp("100.64.0.77", ME4, 54, 40000)) is DROP
    assert flt.check_out(tcp(ME4, "100.64.0.77", 1, 2)) is ACCEPT
    assert flt.check_out(raw(ME4, "8.8.8.8", 47)) is ACCEPT


def test_outbound_pre_checks_apply(flt: Filter) -> None:
    assert flt.check_out(b"") is ACCEPT
    assert flt.check_out(udp(ME4, "224.0.0.251", 5353, 5353)) is DROP


def test_udp_lru_evicts_after_512(flt: Filter) -> None:
    first = udp("100.64.1.1", ME4, 53, 10000)
    flt.check_out(udp(ME4, "100.64.1.1", 10000, 53))
    for p in range(10001, 10001 + 512):
        flt.check_out(udp(ME4, "100.64.1.2", p, 53))
    assert flt.check_in(first) is DROP
    assert flt.check_in(udp("100.64.1.2", ME4, 53, 10001 + 511)) is ACCEPT


def test_lru_lookup_refreshes(flt: Filter) -> None:
    flt.check_out(udp(ME4, "100.64.1.1", 10000, 53))
    for p in range(10001, 10001 + 511):
        flt.check_out(udp(ME4, "100.64.1.2", p, 53))
    assert flt.check_in(udp("100.64.1.1", ME4, 53, 10000)) is ACCEPT  # refreshes
    flt.check_out(udp(ME4, "100.64.1.2", 20000, 53))
    assert flt.check_in(udp("100.64.1.1", ME4, 53, 10000)) is ACCEPT


def test_carry_state(flt: Filter) -> None:
    flt.check_out(udp(ME4, "100.64.1.1", 10000, 53))
    f2, _ = Filter.from_rules([], LOCAL)
    f2.carry_state_from(flt)
    assert f2.check_in(udp("100.64.1.1", ME4, 53, 10000)) is ACCEPT


def test_allow_none() -> None:
    f = Filter.allow_none()
    assert f.check_in(tcp(PEER4, ME4, 1, 22)) is DROP
    assert f.check_in(tcp(PEER4, ME4, 1, 22, flags=0x10)) is DROP
    assert f.check_in(icmp(PEER4, ME4, 0)) is DROP
    assert f.check_in(b"") is ACCEPT
    assert f.check_out(tcp(ME4, PEER4, 1, 22)) is ACCEPT


def test_allow_all_from_headscale() -> None:
    allow_all = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]
    f, _ = Filter.from_rules(allow_all, LOCAL)
    assert f.check_in(tcp(OTHER4, ME4, 1, 9999)) is ACCEPT
    assert f.check_in(udp(PEER6, ME6, 1, 9999)) is ACCEPT
    assert f.check_in(icmp(OTHER4, ME4, 8)) is ACCEPT
    assert f.check_in(raw(OTHER4, ME4, 47)) is DROP  # IPProto default excludes GRE


def test_empty_rule_list_blocks_all() -> None:
    f, _ = Filter.from_rules([], LOCAL)
    assert f.check_in(tcp(PEER4, ME4, 1, 22)) is DROP
    assert f.check_in(tcp(PEER4, ME4, 1, 22, 0x10)) is ACCEPT


def test_srcbits_is_an_error() -> None:
    with pytest.raises(FilterRuleError, match="SrcBits"):
        compile_rules([{"SrcIPs": ["*"], "SrcBits": [32], "DstPorts": []}])


def test_bad_entries_skipped_and_reported() -> None:
    matches, errors = compile_rules(
        [
            {
                "SrcIPs": ["nope", PEER4, "10.0.0.1/8"],
                "DstPorts": [
                    {"IP": "cap:x", "Ports": {"First": 0, "Last": 1}},
                    {"IP": ME4, "Ports": {"First": 1, "Last": 2}},
                ],
            }
        ]
    )
    assert len(errors) == 3
    assert matches[0].src4 == ((0x64400002, 0x64400002),)
    assert len(matches[0].dst4) == 1


def test_ipproto_out_of_range_ignored() -> None:
    m, _ = compile_rules([{"SrcIPs": ["*"], "DstPorts": [], "IPProto": [6, 300, -1]}])
    assert m[0].protos == frozenset({6})


def test_case_insensitive_keys() -> None:
    m, _ = compile_rules([{"srcips": ["*"], "dstports": [{"ip": "*", "ports": {"first": 1, "last": 2}}]}])
    assert m[0].dst4[0].first == 1


@pytest.mark.parametrize(
    "arg,v4,v6,cap",
    [
        ("*", ((0, 2**32 - 1),), ((0, 2**128 - 1),), ""),
        ("1.2.3.4", ((0x01020304, 0x01020304),), (), ""),
        ("10.0.0.0/8", ((0x0A000000, 0x0AFFFFFF),), (), ""),
        ("1.0.0.1-1.0.0.9", ((0x01000001, 0x01000009),), (), ""),
        ("::1", (), ((1, 1),), ""),
        ("cap:foo", (), (), "foo"),
    ],
)
def test_parse_ip_set(arg, v4, v6, cap) -> None:
    s = parse_ip_set(arg)
    assert (s.v4, s.v6, s.cap) == (v4, v6, cap)


@pytest.mark.parametrize("arg", ["", "1.2.3", "10.0.0.1/8", "1.0.0.9-1.0.0.1", "1.0.0.1-::2", "a-b"])
def test_parse_ip_set_rejects(arg) -> None:
    with pytest.raises(FilterRuleError):
        parse_ip_set(arg)


def test_concat_packet_filters() -> None:
    assert concat_packet_filters({"b": [{"x": 2}], "a": [{"x": 1}], "c": None}) == [{"x": 1}, {"x": 2}]


def test_parse_fields() -> None:
    p = parse(tcp(PEER4, ME4, 1234, 22, 0x12))
    assert (p.version, p.proto, p.sport, p.dport, p.tcp_flags) == (4, 6, 1234, 22, 0x12)
    p = parse(icmp(PEER6, ME6, 128))
    assert (p.version, p.proto, p.icmp_type) == (6, 58, 128)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes_never_raise(b: bytes) -> None:
    f, _ = Filter.from_rules(RULES, LOCAL)
    assert f.check_in(b) in (ACCEPT, DROP)
    assert f.check_out(b) in (ACCEPT, DROP)
    parse(b)


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([0x45, 0x46, 0x4F, 0x60]), st.binary(min_size=19, max_size=90))
def test_fuzz_ip_looking_bytes_never_raise(first: int, rest: bytes) -> None:
    f, _ = Filter.from_rules(RULES, LOCAL)
    b = bytes([first]) + rest
    f.check_in(b)
    f.check_out(b)
    f.check_in(memoryview(b))


def test_hot_path_cost_is_microseconds(flt: Filter) -> None:
    """Not a timed assertion of performance: a generous sanity bound (real numbers in benchmarks/)."""
    pkts = [tcp(PEER4, ME4, 1, 22, 0x10), udp(PEER4, ME4, 1, 8000), tcp(PEER6, ME6, 1, 22)]
    n = 3000
    t0 = time.perf_counter()
    for _ in range(n):
        for p in pkts:
            flt.check_in(p)
    per = (time.perf_counter() - t0) / (n * len(pkts))
    assert per < 200e-6


def test_accepts_tailcfg_dataclasses() -> None:
    from engine.tailcfg.filter import FILTER_ALLOW_ALL, FilterRule, NetPortRange, PortRange

    f, errors = Filter.from_rules(FILTER_ALLOW_ALL, LOCAL)
    assert errors == [] and f.check_in(tcp(OTHER4, ME4, 1, 9999)) is ACCEPT
    rule = FilterRule(src_ips=(PEER4,), dst_ports=(NetPortRange(ip=ME4, ports=PortRange(22, 22)),), ip_proto=(6,))
    f, _ = Filter.from_rules([rule], LOCAL)
    assert f.check_in(tcp(PEER4, ME4, 1, 22)) is ACCEPT
    assert f.check_in(udp(PEER4, ME4, 1, 22)) is DROP


def test_for_netmap() -> None:
    f, errors = Filter.for_netmap(None, [ME4 + "/32"])
    assert errors == [] and f.check_in(tcp(PEER4, ME4, 1, 22, 0x10)) is DROP  # AllowNone
    allow_all = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]
    f.check_out(udp(ME4, PEER4, 5000, 53))
    g, _ = Filter.for_netmap(allow_all, [ME4 + "/32"], ["0.0.0.0/0", "::/0"], prev=f)
    assert g.check_in(tcp(PEER4, "198.51.100.7", 1, 443)) is ACCEPT  # exit node: 0/0 is local
    assert g.check_in(udp(PEER4, ME4, 53, 5000)) is ACCEPT
    h, errors = Filter.for_netmap([{"SrcIPs": ["*"], "SrcBits": [1], "DstPorts": []}], [ME4 + "/32"])
    assert errors and h.check_in(tcp(PEER4, ME4, 1, 22, 0x10)) is DROP  # fails closed
