"""engine.filter.localnets: an exit node's default route shrunk to "guest Wi-Fi" for the filter's local set."""

from __future__ import annotations

import asyncio
import ipaddress

from hypothesis import given, settings, strategies as st

from engine.filter import ACCEPT, DROP, DropReason, Filter
from engine.filter.localnets import NEVER_VIA_DEFAULT, local_routes, shrink_default_route, subtract
from engine.filter.rules import prefixes_to_ranges
from engine.net.interfaces import interface_prefixes, parse_ip_addr_json
from tests.unit.filter.pkt import udp

IFACES = (
    "127.0.0.1/8",
    "198.51.100.2/24",
    "::1/128",
    "2001:db8:1::2/64",
    "fe80::1/64",
    "100.64.0.1/32",
    "fd7a:115c:a1e0::1/128",
)
ME4 = "100.64.0.1"
CLIENT4 = "100.64.0.2"
ALLOW_ALL = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]


def _contains(nets, addr: str) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a in ipaddress.ip_network(n) for n in nets if ipaddress.ip_network(n).version == a.version)


def test_subtract_nested_and_disjoint():
    n = ipaddress.ip_network
    assert subtract([n("10.0.0.0/8")], [n("10.0.0.0/8")]) == []
    assert subtract([n("10.0.0.0/30")], [n("10.0.0.0/8")]) == []
    assert subtract([n("10.0.0.0/30")], [n("192.168.0.0/16"), n("::/0")]) == [n("10.0.0.0/30")]
    assert subtract([n("10.0.0.0/30")], [n("10.0.0.1/32")]) == [n("10.0.0.0/32"), n("10.0.0.2/31")]


def test_default_v4_excludes_attached_subnet_but_keeps_own_address():
    nets = [str(x) for x in shrink_default_route("0.0.0.0/0", IFACES)]
    assert _contains(nets, "203.0.113.9")  # the internet
    assert _contains(nets, "198.51.100.2")  # our own WAN address is re-added
    assert not _contains(nets, "198.51.100.1")  # the attached WAN subnet's router
    assert not _contains(nets, "198.51.100.255")
    assert _contains(nets, "127.0.0.1") and not _contains(nets, "127.0.0.2")
    for forbidden in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "224.0.0.1", "100.64.0.9"):
        assert not _contains(nets, forbidden), forbidden
    assert all(x.version == 4 for x in shrink_default_route("0.0.0.0/0", IFACES))


def test_default_v6_excludes_attached_subnet_link_local_multicast_tailnet():
    nets = [str(x) for x in shrink_default_route("::/0", IFACES)]
    assert _contains(nets, "2001:db8:2::1")
    assert _contains(nets, "2001:db8:1::2")
    assert not _contains(nets, "2001:db8:1::1")
    for forbidden in ("fe80::2", "ff02::1", "fd7a:115c:a1e0::5"):
        assert not _contains(nets, forbidden), forbidden


def test_private_host_address_stays_out_of_the_default_route():
    # tailscale re-adds host addresses before removing the never-local ranges
    nets = [str(x) for x in shrink_default_route("0.0.0.0/0", ["10.9.0.2/24"])]
    assert not _contains(nets, "10.9.0.2")


def test_local_routes_keeps_explicit_subnets_even_when_attached():
    routes = local_routes(["0.0.0.0/0", "::/0", "198.51.100.0/24"], IFACES)
    assert "198.51.100.0/24" in routes
    assert _contains(routes, "198.51.100.1")
    assert local_routes(["10.1.0.0/16"], IFACES) == ("10.1.0.0/16",)
    assert local_routes(["0.0.0.0/0"], ()) == tuple(
        str(x) for x in subtract([ipaddress.ip_network("0.0.0.0/0")], NEVER_VIA_DEFAULT)
    )


def test_filter_with_shrunk_default_drops_attached_subnet():
    f, errors = Filter.for_netmap(ALLOW_ALL, [ME4 + "/32"], local_routes(["0.0.0.0/0", "::/0"], IFACES))
    assert errors == []
    assert f.check_in(udp(CLIENT4, "203.0.113.9", 5000, 7)) is ACCEPT
    assert f.check_in(udp(CLIENT4, "198.51.100.2", 5000, 7)) is ACCEPT
    assert f.check_in(udp(CLIENT4, ME4, 5000, 7)) is ACCEPT
    assert f.check_in(udp(CLIENT4, "198.51.100.1", 5000, 7)) is DROP
    assert f.drops[DropReason.DST_NOT_LOCAL] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 31)), max_size=5), st.integers(0, 2**32 - 1))
def test_shrink_matches_set_semantics(ifaces, probe):
    prefixes = [f"{ipaddress.IPv4Address(a)}/{plen}" for a, plen in ifaces]
    nets = shrink_default_route("0.0.0.0/0", prefixes)
    ip = ipaddress.IPv4Address(probe)
    in_subnet = any(
        ip in ipaddress.ip_interface(p).network
        for p in prefixes
        if ipaddress.ip_interface(p).ip not in ipaddress.ip_network("100.64.0.0/10")
    )
    is_host = any(
        ip == ipaddress.ip_interface(p).ip
        for p in prefixes
        if ipaddress.ip_interface(p).ip not in ipaddress.ip_network("100.64.0.0/10")
    )
    forbidden = any(ip in n for n in NEVER_VIA_DEFAULT if n.version == 4)
    expected = (not in_subnet or is_host) and not forbidden
    assert any(ip in n for n in nets) == expected
    # the result is disjoint and collapsed
    assert list(ipaddress.collapse_addresses(nets)) == nets


def test_shrunk_default_is_a_handful_of_filter_ranges():
    v4, v6 = prefixes_to_ranges([ME4 + "/32", *local_routes(["0.0.0.0/0", "::/0"], IFACES)])
    assert len(v4) <= 16 and len(v6) <= 8, (v4, v6)  # merged: the per-packet scan stays short
    assert all(a[1] + 1 < b[0] for a, b in zip(v4, v4[1:]))  # sorted, disjoint, not adjacent
    assert prefixes_to_ranges(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "10.0.2.0/24"])[0] == (
        (0x0A000000, 0x0A0000FF),
        (0x0A000200, 0x0A0002FF),
    )


def test_interface_prefixes_reads_this_namespace():
    # read-only: the loopback address is listed (tailscale counts loopback too); an excluded interface is not
    assert "127.0.0.1/8" in interface_prefixes()
    assert "127.0.0.1/8" not in interface_prefixes(exclude_ifaces={"lo"})


def test_interface_prefixes_on_a_running_event_loop():
    # the daemon calls it from its asyncio loop thread (Node._apply_filter)
    async def main():
        return interface_prefixes()

    assert "127.0.0.1/8" in asyncio.run(main())


def test_parse_ip_addr_json_down_ptp_and_junk():
    doc = [
        {
            "ifname": "lo",
            "flags": ["LOOPBACK", "UP"],
            "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                {"family": "inet6", "local": "::1", "prefixlen": 128},
            ],
        },
        {
            "ifname": "wan0",
            "flags": ["POINTOPOINT"],
            "addr_info": [  # down interfaces count too (as tailscale)
                {"family": "inet", "local": "198.51.100.2", "address": "198.51.100.1", "prefixlen": 32}
            ],
        },
        {
            "ifname": "eth1",
            "addr_info": [
                {"family": "inet6", "local": "fe80::1%eth1", "prefixlen": 64},
                {"family": "inet", "local": "bogus", "prefixlen": 24},
                {"prefixlen": 24},
            ],
        },
        {"ifname": "mesh0", "addr_info": [{"family": "inet", "local": "100.64.0.1", "prefixlen": 32}]},
        "junk",
    ]
    assert parse_ip_addr_json(doc, {"mesh0"}) == ("127.0.0.1/8", "198.51.100.2/32", "::1/128", "fe80::1/64")
    assert parse_ip_addr_json({"not": "a list"}) == ()


def test_local_destination_bisect_matches_a_linear_scan():
    """Filter's per-packet local check (a bisect over merged ranges) agrees with the plain definition."""
    import random

    from engine.filter.filter import _in_ranges, _in_sorted
    from engine.filter.rules import prefixes_to_ranges

    rng = random.Random(7)
    for _ in range(200):
        prefixes = [
            f"{rng.randrange(1 << 32) >> (32 - p) << (32 - p) if p else 0}/{p}"
            for p in (rng.choice((0, 8, 12, 16, 24, 30, 32)) for _ in range(rng.randrange(0, 12)))
        ]
        prefixes = [
            str(ipaddress.ip_network(f"{ipaddress.IPv4Address(int(p.split('/')[0]))}/{p.split('/')[1]}"))
            for p in prefixes
        ]
        v4, _ = prefixes_to_ranges(prefixes)
        lows, highs = tuple(r[0] for r in v4), tuple(r[1] for r in v4)
        nets = [ipaddress.ip_network(p) for p in prefixes]
        for x in [rng.randrange(1 << 32) for _ in range(50)] + [lo for lo in lows] + [hi + 1 for hi in highs]:
            want = any(ipaddress.IPv4Address(x % (1 << 32)) in n for n in nets)
            assert _in_sorted(x % (1 << 32), lows, highs) == want == _in_ranges(x % (1 << 32), v4)
