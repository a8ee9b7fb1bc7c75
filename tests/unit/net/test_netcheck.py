"""Netcheck core: probe plan, report (public address, hard-NAT detection, latency), home-region stickiness."""

from __future__ import annotations

import itertools

import pytest

from engine.derp.derpmap import DerpMap
from engine.net import netcheck, stun


def _rand():
    c = itertools.count(1)
    return lambda n: next(c).to_bytes(n, "big")


DMAP = DerpMap.from_json(
    {
        "Regions": {
            "1": {"RegionID": 1, "Nodes": [{"Name": "1a", "RegionID": 1, "HostName": "d1", "IPv4": "203.0.113.10"}]},
            "2": {
                "RegionID": 2,
                "Nodes": [{"Name": "2a", "RegionID": 2, "HostName": "d2", "IPv4": "203.0.113.11", "STUNPort": 3479}],
            },
            "3": {"RegionID": 3, "Nodes": [{"Name": "3a", "RegionID": 3, "HostName": "d3", "STUNPort": -1}]},
        }
    }
)


def test_plan_one_probe_per_stun_node():
    probes = netcheck.plan(DMAP, _rand())
    assert [(p.region_id, p.dest) for p in probes] == [(1, ("203.0.113.10", 3478)), (2, ("203.0.113.11", 3479))]
    for p in probes:
        assert stun.parse_binding_request(p.packet) == p.txid


def _run(mapped):
    probes = netcheck.plan(DMAP, _rand())
    run = netcheck.NetcheckRun(probes, sent_at=10.0)
    for p, (addr, rtt) in zip(probes, mapped):
        assert run.handle_response(stun.build_response(p.txid, addr), 10.0 + rtt)
    return run, probes


def test_easy_nat_report():
    run, _ = _run([(("198.51.100.2", 4000), 0.020), (("198.51.100.2", 4000), 0.010)])
    r = run.report()
    assert r.udp and r.global_v4 == ("198.51.100.2", 4000)
    assert r.mapping_varies_by_dest_ip is False
    assert r.preferred_derp == 2
    ni = r.net_info()
    assert ni["PreferredDERP"] == 2 and ni["WorkingUDP"] is True and ni["MappingVariesByDestIP"] is False
    assert ni["DERPLatency"] == {"1-v4": 0.02, "2-v4": 0.01}


def test_hard_nat_detected():
    run, _ = _run([(("198.51.100.2", 4000), 0.02), (("198.51.100.2", 4555), 0.02)])
    assert run.report().mapping_varies_by_dest_ip is True


def test_wrong_and_duplicate_answers_rejected():
    run, probes = _run([(("198.51.100.2", 4000), 0.02)])
    assert not run.handle_response(stun.build_response(b"\x09" * 12, ("1.1.1.1", 1)), 11.0)
    assert not run.handle_response(stun.build_response(probes[0].txid, ("1.1.1.1", 1)), 11.0)  # duplicate
    assert not run.handle_response(b"junk", 11.0)
    assert run.rejected == 3 and not run.done()


def test_no_udp_falls_back_to_tcp_latency():
    run = netcheck.NetcheckRun(netcheck.plan(DMAP, _rand()), 0.0)
    r = run.report(tcp_latency={1: 0.05, 2: 0.01})
    assert not r.udp and r.preferred_derp == 2 and r.net_info()["WorkingUDP"] is False


@pytest.mark.parametrize(
    "lat,prev,want",
    [
        pytest.param({1: 0.030, 2: 0.025}, 1, 1, id="sticky_small_gain"),
        pytest.param({1: 0.100, 2: 0.050}, 1, 2, id="switch_big_gain"),
        pytest.param({1: 0.008, 2: 0.001}, 1, 1, id="sticky_under_10ms"),
        pytest.param({2: 0.050}, 1, 2, id="old_unreachable"),
        pytest.param({}, 3, 3, id="no_data_keeps"),
        pytest.param({1: 0.03, 2: 0.02}, 0, 2, id="first_choice"),
    ],
)
def test_choose_home(lat, prev, want):
    assert netcheck.choose_home(lat, prev) == want
