"""Backend dns_os_config/dns_query over FakeEngine (MagicDNS built from its fake netmap) and the LocalAPI routes."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rcode
import pytest

from engine.ipn.backend import BackendError
from engine.ipn.dnsquery import QueryError
from engine.ipn.local import Backend
from engine.ipn.store import MemoryStore
from engine.localapi.schema import DNSResolver, MaskedPrefs, Prefs, State
from tests.support.fake_engine import FAKE_PEERAPI_PORT, FakeEngine

UP = Prefs(control_url="http://control.invalid", want_running=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def running_backend() -> Backend:
    b = Backend(FakeEngine(), store=MemoryStore(), os_hostname=lambda: "testhost")
    await b.start()
    await b.start_with(update_prefs=UP)
    for _ in range(10):
        await asyncio.sleep(0)
    assert b.state == State.RUNNING
    return b


def answers(reply: bytes) -> tuple[str, list[str]]:
    m = dns.message.from_wire(reply)
    return dns.rcode.to_text(m.rcode()), [rd.to_text() for rrset in m.answer for rd in rrset]


@pytest.mark.parametrize(
    "name,qtype,rcode,data,resolvers",
    [
        pytest.param("peer1.tail.example.com", "A", "NOERROR", ["100.64.0.2"], [], id="tailnet-fqdn"),
        pytest.param("peer1", "a", "NOERROR", ["100.64.0.2"], [], id="short-name-search-domain"),
        pytest.param("self.tail.example.com", "AAAA", "NOERROR", ["fd7a:115c:a1e0::1"], [], id="self-aaaa"),
        pytest.param("printer.tail.example.com", "A", "NOERROR", ["100.64.0.9"], [], id="extra-record"),
        pytest.param("nope.tail.example.com", "A", "NXDOMAIN", [], [], id="unknown-in-tailnet-domain"),
        pytest.param("2.0.64.100.in-addr.arpa", "PTR", "NOERROR", ["peer1.tail.example.com."], [], id="reverse"),
        pytest.param("www.example.org", "A", "NOERROR", ["192.0.2.80"], ["192.0.2.1"], id="forwarded-global"),
        pytest.param("missing.example.org", "A", "NXDOMAIN", [], ["192.0.2.1"], id="forwarded-nxdomain"),
        pytest.param("intranet.corp.example.com", "A", "NOERROR", ["10.1.2.3"], ["192.0.2.53"], id="split-route"),
    ],
)
def test_dns_query_resolves_like_quad100(name, qtype, rcode, data, resolvers):
    async def t():
        b = await running_backend()
        try:
            res = await b.dns_query(name, qtype)
            assert answers(res.reply) == (rcode, data)
            assert [r.addr for r in res.resolvers] == resolvers
        finally:
            await b.aclose()

    run(t())


def test_split_route_over_doh_reports_bootstrap():
    async def t():
        b = await running_backend()
        try:
            res = await b.dns_query("x.lab.example.com", "TXT")
            assert res.resolvers == [
                DNSResolver(addr="https://doh.lab.example/dns-query", bootstrap_resolution=["192.0.2.54"])
            ]
        finally:
            await b.aclose()

    run(t())


def test_exit_node_in_use_sends_other_names_to_its_doh():
    async def t():
        b = await running_backend()
        try:
            await b.edit_prefs(MaskedPrefs.of(exit_node_id="n3CNTRL"))
            res = await b.dns_query("www.example.org", "A")
            assert [r.addr for r in res.resolvers] == [f"http://100.64.0.3:{FAKE_PEERAPI_PORT}/dns-query"]
            assert answers(res.reply) == ("NOERROR", ["192.0.2.80"])
            res = await b.dns_query("peer1", "A")  # tailnet names stay local
            assert res.resolvers == [] and answers(res.reply) == ("NOERROR", ["100.64.0.2"])
            # a split route not marked UseWithExitNode is dropped: the exit node resolves it
            res = await b.dns_query("intranet.corp.example.com", "A")
            assert [r.addr for r in res.resolvers] == [f"http://100.64.0.3:{FAKE_PEERAPI_PORT}/dns-query"]
        finally:
            await b.aclose()

    run(t())


def test_os_config_follows_accept_dns():
    async def t():
        b = await running_backend()
        try:
            c = b.dns_os_config()
            assert c.applied and c.route_all and c.applied_nameservers == ["100.100.100.100"]
            assert c.applied_search_domains == ["tail.example.com"]
            assert c.applied_match_domains == ["tail.example.com", "corp.example.com", "lab.example.com"]
            assert c.nameservers == ["198.51.100.53"]  # as tailscaled: the system's own, from before us
            await b.edit_prefs(MaskedPrefs.of(corp_dns=False))
            c = b.dns_os_config()
            assert not c.applied and c.applied_nameservers == [] and c.nameservers == ["198.51.100.53"]
        finally:
            await b.aclose()

    run(t())


def test_bad_name_and_type_are_query_errors():
    async def t():
        b = await running_backend()
        try:
            with pytest.raises(QueryError, match="unknown DNS message type: AXFR"):
                await b.dns_query("peer1", "axfr")
            with pytest.raises(QueryError, match="label is empty"):
                await b.dns_query("a..b", "A")
        finally:
            await b.aclose()

    run(t())


def test_not_running_is_a_backend_error():
    async def t():
        b = Backend(FakeEngine(), store=MemoryStore(), os_hostname=lambda: "testhost")
        await b.start()
        try:
            with pytest.raises(BackendError, match=r"dns-query needs a running connection \(state NeedsLogin\)"):
                await b.dns_query("peer1", "A")
            with pytest.raises(BackendError, match="dns-osconfig needs a running connection"):
                b.dns_os_config()
        finally:
            await b.aclose()

    run(t())
