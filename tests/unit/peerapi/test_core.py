"""Unit tests of the pure peerAPI core: DNS-over-HTTP request forms, errors, and who may query."""

from __future__ import annotations

import base64
import json

import dns.message
import dns.rrset
import pytest

from engine.filter import ACCEPT, Filter
from engine.filter.packet import parse
from engine.peerapi import Access, DNSAnswer, DNSQuery, PeerAPICore, PeerIdentity, Request, Response
from engine.peerapi.access import filter_internet_check, syn_probe
from engine.peerapi.core import MAX_DNS_QUERY_BYTES

ME4, ME6 = "100.64.0.1", "fd7a:115c:a1e0::1"
SAME_USER, OTHER_USER = "100.64.0.2", "100.64.0.3"
HOST = f"{ME4}:40000"


def access(*, offering_exit: bool = True, internet: bool | None = True) -> Access:
    peers = {
        ME4: PeerIdentity(1, "me.ts.net.", 10),
        SAME_USER: PeerIdentity(2, "mine.ts.net.", 10),
        OTHER_USER: PeerIdentity(3, "theirs.ts.net.", 20),
    }
    check = None if internet is None else (lambda ip: internet)
    return Access(frozenset({ME4, ME6}), 10, peers, offering_exit, check)


def query(name: str = "www.example.org.") -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = 4242
    return q.to_wire()


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def get(target: str, remote: str = OTHER_USER, **hdr: str) -> Request:
    headers = (("host", HOST),) + tuple((k.replace("_", "-"), v) for k, v in hdr.items())
    return Request("GET", target, headers, b"", remote)


def post(body: bytes, ctype: str = "application/dns-message", remote: str = OTHER_USER) -> Request:
    return Request("POST", "/dns-query", (("host", HOST), ("content-type", ctype)), body, remote)


@pytest.fixture
def core() -> PeerAPICore:
    return PeerAPICore(access(), self_name="me.ts.net.")


def test_get_dns_param(core):
    q = query()
    out = core.handle(get("/dns-query?dns=" + b64(q)))
    assert out == DNSQuery(q)
    assert core.counters.dns_queries == 1


def test_get_dns_param_with_padding(core):
    q = query("a.example.")
    assert core.handle(get("/dns-query?dns=" + base64.urlsafe_b64encode(q).decode())) == DNSQuery(q)


def test_post(core):
    q = query()
    assert core.handle(post(q)) == DNSQuery(q)
    assert core.handle(post(q, "application/dns-message; charset=x")) == DNSQuery(q)


def test_finish_dns_reply(core):
    q = query()
    r = dns.message.make_response(dns.message.from_wire(q))
    r.answer.append(dns.rrset.from_text("www.example.org.", 60, "IN", "A", "203.0.113.80"))
    out = core.finish_dns(DNSQuery(q), DNSAnswer(reply=r.to_wire()))
    assert out.status == 200
    assert ("Content-Type", "application/dns-message") in out.headers
    assert out.body == r.to_wire()
    assert core.counters.dns_replies == 1


def test_debug_form(core):
    out = core.handle(get("/dns-query?q=www.example.org&t=a"))
    assert isinstance(out, DNSQuery) and out.pretty
    m = dns.message.from_wire(out.query)
    assert m.question[0].name.to_text() == "www.example.org." and m.id == 1
    r = dns.message.make_response(m)
    r.answer.append(dns.rrset.from_text("www.example.org.", 60, "IN", "A", "203.0.113.80"))
    res = core.finish_dns(out, DNSAnswer(reply=r.to_wire()))
    assert res.status == 200 and json.loads(res.body) == ["203.0.113.80"]


@pytest.mark.parametrize(
    "req,status,reason",
    [
        pytest.param(get("/dns-query?dns=***"), 400, "dns-base64", id="bad_base64"),
        pytest.param(get("/dns-query?dns=" + "A" * (MAX_DNS_QUERY_BYTES * 2)), 413, "dns-oversize", id="oversize_get"),
        pytest.param(post(b"\0" * (MAX_DNS_QUERY_BYTES + 1)), 413, "dns-oversize", id="oversize_post"),
        pytest.param(get("/dns-query"), 400, "dns-missing", id="missing_param"),
        pytest.param(post(query(), "text/plain"), 415, "dns-content-type", id="wrong_content_type"),
        pytest.param(
            Request("PUT", "/dns-query", (("host", HOST),), b"", OTHER_USER), 405, "bad-method", id="wrong_method"
        ),
        pytest.param(get("/nope"), 404, "not-found", id="wrong_path"),
        pytest.param(get("/dns-query?dns=" + b64(b"\1\2\3")), 400, "dns-short", id="short_query"),
        pytest.param(get("/dns-query?dns=" + b64(b"\0\0\x80" + b"\0" * 9)), 400, "dns-not-query", id="qr_set"),
        pytest.param(get("/dns-query?q=a..b"), 400, "dns-bad-name", id="bad_debug_name"),
        pytest.param(get("/dns-query?dns=x", referer="http://evil/"), 403, "invalid-request", id="referer"),
        pytest.param(get("/dns-query?dns=x", origin="http://evil"), 403, "invalid-request", id="origin"),
        pytest.param(
            Request("GET", "/", (("host", "10.0.0.1:80"),), b"", OTHER_USER), 403, "invalid-request", id="host_not_ours"
        ),
        pytest.param(Request("GET", "/", (), b"", OTHER_USER), 403, "invalid-request", id="no_host"),
        pytest.param(get("/", remote="100.64.9.9"), 403, "unknown-peer", id="unknown_peer"),
    ],
)
def test_errors(core, req, status, reason):
    out = core.handle(req)
    assert isinstance(out, Response), out
    assert out.status == status, out.body
    assert core.counters.errors == {reason: 1}
    assert core.counters.statuses == {status: 1}


def test_host_forms():
    a = access()
    assert a.host_valid("peer")
    assert a.host_valid(f"{ME4}:1")
    assert a.host_valid(f"[{ME6}]:1")
    assert not a.host_valid(ME4)  # port required
    assert not a.host_valid(f"{ME6}:1")  # v6 needs brackets
    assert not a.host_valid("example.com:80")


def test_resolver_drop_and_failures(core):
    q = DNSQuery(query())
    assert core.finish_dns(q, DNSAnswer(reply=None)).status == 400
    assert core.finish_dns(q, DNSAnswer(timed_out=True)).status == 504
    assert core.finish_dns(q, DNSAnswer(failed=True)).status == 502


def test_dns_unavailable():
    c = PeerAPICore(access(), dns_available=False)
    assert c.handle(get("/dns-query?dns=" + b64(query()))).status == 501


@pytest.mark.parametrize(
    "offering_exit,internet,remote,allowed",
    [
        pytest.param(True, True, OTHER_USER, True, id="exit_node_internet_ok"),
        pytest.param(False, True, OTHER_USER, False, id="not_exit_node"),
        pytest.param(True, False, OTHER_USER, False, id="exit_node_no_internet_acl"),
        pytest.param(True, None, OTHER_USER, False, id="exit_node_no_filter"),
        pytest.param(False, False, SAME_USER, True, id="same_user_always"),
        pytest.param(False, False, ME4, True, id="self"),
    ],
)
def test_who_may_query(offering_exit, internet, remote, allowed):
    c = PeerAPICore(access(offering_exit=offering_exit, internet=internet))
    out = c.handle(get("/dns-query?dns=" + b64(query()), remote=remote))
    if allowed:
        assert isinstance(out, DNSQuery)
    else:
        assert isinstance(out, Response) and out.status == 403 and c.counters.errors == {"dns-denied": 1}


def test_unknown_connection_rejected(core):
    assert core.accept_connection(OTHER_USER)
    assert not core.accept_connection("100.64.9.9")
    assert core.counters.connections_rejected == 1


def test_browser_gets_security_headers(core):
    out = core.handle(get("/", user_agent="Mozilla/5.0 (X11)"))
    assert out.status == 200 and ("X-Frame-Options", "DENY") in out.headers
    plain = core.handle(get("/dns-query?dns=" + b64(query())))
    assert isinstance(plain, DNSQuery) and not plain.security_headers


def test_syn_probe_parses():
    p = parse(syn_probe("100.64.0.3", "0.0.0.0", 53))
    assert (p.version, p.proto, p.dport, p.tcp_flags) == (4, 6, 53, 0x02)
    p6 = parse(syn_probe("fd7a:115c:a1e0::3", "2000::", 53))
    assert (p6.version, p6.proto, p6.dport, p6.tcp_flags) == (6, 6, 53, 0x02)


RULE_INTERNET = {"SrcIPs": ["100.64.0.3"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
RULE_TAILNET_ONLY = {
    "SrcIPs": ["100.64.0.3"],
    "DstPorts": [{"IP": "100.64.0.0/10", "Ports": {"First": 0, "Last": 65535}}],
}


@pytest.mark.parametrize(
    "rules,routes,want",
    [
        pytest.param([RULE_INTERNET], ("0.0.0.0/0", "::/0"), True, id="autogroup_internet"),
        pytest.param([RULE_TAILNET_ONLY], ("0.0.0.0/0", "::/0"), False, id="tailnet_only_acl"),
        pytest.param([RULE_INTERNET], (), False, id="not_advertising_exit"),
    ],
)
def test_internet_check_from_real_filter(rules, routes, want):
    f, errs = Filter.from_rules(rules, [ME4, ME6, *routes])
    assert not errs
    assert filter_internet_check(f, ACCEPT)("100.64.0.3") is want


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param([], id="shields_up_no_rules"),
        pytest.param([RULE_TAILNET_ONLY | {"SrcIPs": ["100.64.0.9"]}], id="acl_for_someone_else"),
    ],
)
def test_peerapi_ports_let_syn_through_any_acl(rules):
    """tailscale accepts a SYN to our peerAPI port whatever the ACL; only that port, only TCP, ICMP unchanged."""
    f, errs = Filter.for_netmap(rules, [ME4, ME6], open_tcp=[(ME4, 40000), (ME6, 40001)])
    assert not errs
    assert f.explain_in(syn_probe("100.64.0.3", ME4, 40000))[0] is ACCEPT
    assert f.explain_in(syn_probe("fd7a:115c:a1e0::3", ME6, 40001))[0] is ACCEPT
    assert f.explain_in(syn_probe("100.64.0.3", ME4, 40001))[0] is not ACCEPT  # other port
    assert f.explain_in(syn_probe("100.64.0.3", ME4, 22))[0] is not ACCEPT
    # the opening is not a rule: it lets no ICMP echo through (tailscale's filter never sees it)
    assert len(f.matches) == len(rules)
    closed, _ = Filter.for_netmap(rules, [ME4, ME6])
    assert closed.explain_in(syn_probe("100.64.0.3", ME4, 40000))[0] is not ACCEPT
