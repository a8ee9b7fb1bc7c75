"""Lab: our node as exit node for our other node (headscale-approved 0.0.0.0/0, ::/0), through real WireGuard.

The topology is the `exitnet` fixture (tests/node/conftest.py): client host c and exit node e
on a LAN with headscale; "inet" (203.0.113.2) behind e and its isp router only; echo servers report
the source they saw. e is a "guest Wi-Fi" exit node (as tailscale): its clients reach the internet,
not e's attached subnets (the LAN with lanhost, the WAN link to isp) unless e advertises them.
"""

from __future__ import annotations

import signal
import time

import pytest

from engine.router.exitnode import BYPASS_MARK
from tests.control.nodes import wait_until
from tests.node.conftest import E_WAN, E_WAN6, ISP_WAN
from tests.node.labnode import INET, INET6, LANHOST, DrivenNode, Node, route_get, routing_dump, tcp_ask, udp_ask

pytestmark = pytest.mark.lab


def _wait_exit_option(node) -> dict:
    return node.wait(lambda s: any(p["ExitNodeOption"] for p in s.get("Peers", [])), "py-e as exit-node option")


def _not_local_drops(st: dict) -> int:
    return ((st.get("Filter") or {}).get("Drops") or {}).get("destination-not-allowed", 0)


def _dropped_by_exit_node(c, ex, dst: str) -> None:
    """c's packets to ``dst`` enter the tunnel and e's filter drops them (not local): no answer, not leaked."""
    before = _not_local_drops(ex.status())
    deadline = time.monotonic() + 30
    while True:  # asked again if a path change lost the probes on the way to e
        assert udp_ask(c, dst, 7, tries=2) == "timeout"
        if _not_local_drops(ex.status()) > before:  # e's debug-engine counters, read live
            return
        assert time.monotonic() < deadline, f"e's filter did not drop c's packets to {dst}: {ex.status().get('Filter')}"


def test_exit_node_end_to_end(exitnet):
    lab, hs, key, c, ex, ctl = exitnet
    before = routing_dump(c)
    assert udp_ask(c, INET, 7, tries=1).startswith("error")  # no route to the "internet" without the exit node
    assert udp_ask(c, INET6, 7, tries=1).startswith("error")

    cl = Node(c, hs.url, auth_key=key, args=("--exit-node", "py-e")).start()
    st = cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved")
    e_id = ex.status()["Self"]["ID"]
    assert st["ExitNodeID"] == e_id
    assert cl.peer("py-e")["ExitNodeOption"]

    # internet traffic leaves through e, masqueraded to e's WAN address (UDP and TCP)
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:"), cl.log()[-2000:]
    assert tcp_ask(c, INET, 8080).startswith(f"{E_WAN}:")
    assert udp_ask(c, INET6, 7).startswith(f"{E_WAN6}:")  # IPv6 too (::/0), masqueraded to e's address
    got = route_get(c, INET)
    assert "dev mesh0" in got and "table 52" in got
    # without allow-LAN the LAN goes into the tunnel too, and e ("guest Wi-Fi") does not forward into
    # its attached subnets: neither lanhost on its LAN nor isp on its WAN link answers ...
    assert "dev mesh0" in route_get(c, LANHOST)
    _dropped_by_exit_node(c, ex, LANHOST)
    _dropped_by_exit_node(c, ex, ISP_WAN)
    # ... while e's own addresses on those subnets are local to e (it answers itself)
    assert c.run(["ping", "-c", "1", "-W", "5", E_WAN], check=False).returncode == 0

    # our own sockets bypass table 52: marked traffic to headscale uses the LAN ...
    assert "dev eth0" in route_get(c, "192.0.2.1", BYPASS_MARK)
    assert "dev mesh0" in route_get(c, "192.0.2.1")  # ... unmarked traffic would not
    # ... the WireGuard socket carries the mark, and headscale sees c's control connection from c itself
    socks = c.run(["ss", "-uanpe"]).stdout
    assert any(":41641" in line and "fwmark:0x80000" in line for line in socks.splitlines()), socks
    est = ctl.run(["ss", "-tnH", "state", "established", "( sport = :8080 )"]).stdout
    assert "192.0.2.11:" in est, est
    # a control connection dialled while table 52 is in force: restart headscale, c reconnects directly
    hs.restart()
    cl.wait(lambda s: s["InMapPoll"] and s["StreamsStarted"] >= 2, "c to reconnect", timeout=60)
    est = ctl.run(["ss", "-tnH", "state", "established", "( sport = :8080 )"]).stdout
    assert "192.0.2.11:" in est, est
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")

    # SIGKILL: rules stay behind; a restart (no exit node) removes them: routing as before
    assert cl.stop(signal.SIGKILL) == -9
    assert "lookup 52" in c.run(["ip", "rule"]).stdout
    # ... but the TUN died with the process and took table 52's routes along: the machine is not stranded
    # behind a dead helper's kill switch, its LAN works at once (the internet is only reachable via e here)
    assert c.run(["ip", "route", "show", "table", "52"]).stdout.strip() == ""
    assert "dev eth0" in route_get(c, LANHOST)
    assert udp_ask(c, LANHOST, 7).startswith("192.0.2.11:")
    cl.restart()
    cl.wait_synced(1)
    assert routing_dump(c, skip_dev="mesh0") == before  # the baseline was taken before mesh0 existed
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    assert cl.stop() == 0
    assert routing_dump(c) == before


def test_exit_node_runtime_api_allow_lan_and_clear(exitnet):
    lab, hs, key, c, ex, ctl = exitnet
    before = routing_dump(c)
    cl = DrivenNode(c, hs.url, auth_key=key).start()
    cl.wait_synced(1)
    _wait_exit_option(cl)
    no_exit = routing_dump(c)
    assert udp_ask(c, INET, 7, tries=1).startswith("error")

    e_ip = ex.ip
    prefs = cl.call("set_exit_node", e_ip)  # by tailnet IP this time (resolved to py-e's ID, as meshctl does)
    assert prefs["exit_node"] == cl.ipn_peer("py-e").id and not prefs["exit_node_allow_lan"]
    cl.wait(lambda s: s.get("ExitNodeID") == ex.status()["Self"]["ID"], "exit node resolved")
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    _dropped_by_exit_node(c, ex, LANHOST)  # LAN into the tunnel, and e does not forward into its LAN

    cl.call("set_exit_node_allow_lan", True)
    assert udp_ask(c, LANHOST, 7).startswith("192.0.2.11:")  # LAN direct
    assert tcp_ask(c, LANHOST, 8080).startswith("192.0.2.11:")
    assert "dev eth0" in route_get(c, LANHOST)
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")  # internet still via e
    cl.call("set_exit_node_allow_lan", False)
    _dropped_by_exit_node(c, ex, LANHOST)

    cl.call("set_exit_node", None)  # clearing restores routing exactly
    cl.wait(lambda s: s.get("ExitNodeID") is None, "exit node cleared")
    assert routing_dump(c) == no_exit
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    assert udp_ask(c, LANHOST, 7).startswith("192.0.2.11:")
    # the peer's /0 are gone from WireGuard: e is an ordinary peer again
    assert c.ping(ex.ip, count=2).returncode == 0

    # set again, then SIGKILL and restart with the exit node: cleanup + re-install, then a clean stop
    cl.call("set_exit_node", "py-e", allow_lan=True)
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    assert cl.stop(signal.SIGKILL) == -9
    cl2 = Node(c, hs.url, args=("--exit-node", "py-e", "--exit-node-allow-lan-access")).start()
    cl2.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node after restart")
    assert "cleaned up after a previous run" in cl2.log() or "removed exit routing leftovers" in cl2.log()
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    assert udp_ask(c, LANHOST, 7).startswith("192.0.2.11:")
    rules = c.run(["ip", "rule"]).stdout
    assert rules.count("lookup 52") == 1, rules  # no duplicates from the crashed run
    assert cl2.stop() == 0
    assert routing_dump(c) == before


def test_bad_exit_node_fails_closed(exitnet):
    """An exit node chosen by IP before the netmap came (as `meshctl up --exit-node IP` may) that no node has."""
    lab, hs, key, c, ex, ctl = exitnet
    cl = Node(c, hs.url, auth_key=key, args=("--exit-node", "100.64.99.99")).start()
    st = cl.wait_synced(1)
    assert st["ExitNodeID"] is None
    assert "not in the netmap" in cl.log()
    assert udp_ask(c, INET, 7, tries=2) == "timeout"  # blackholed, not leaked to the LAN
    assert c.ping(ex.ip, count=2).returncode == 0  # the tailnet still works
    assert cl.stop() == 0


def test_exit_node_offers_its_lan_only_when_advertised(exitnet):
    """To let its clients into its LAN, an exit node advertises that LAN as a subnet route (as tailscale users do)."""
    lab, hs, key, c, ex, ctl = exitnet
    cl = Node(c, hs.url, auth_key=key, args=("--exit-node", "py-e")).start()
    cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved")
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    _dropped_by_exit_node(c, ex, LANHOST)

    assert ex.stop() == 0
    ex.restart("--advertise-exit-node", "--advertise-routes", "192.0.2.0/24")
    ex.wait_synced(1)
    wait_until(
        lambda: "192.0.2.0/24" in (hs.node_by_hostname("py-e").get("available_routes") or ()),
        "py-e to announce 192.0.2.0/24",
    )
    nid = int(hs.node_by_hostname("py-e")["id"])
    hs.cli("nodes", "approve-routes", "-i", str(nid), "-r", "0.0.0.0/0,::/0,192.0.2.0/24", json_out=False)
    cl.wait(
        lambda s: any(p["Name"].startswith("py-e.") and "192.0.2.0/24" in p["AllowedIPs"] for p in s["Peers"]),
        "py-e's LAN route in c's netmap",
    )
    # the advertised LAN is local to e's filter although it is an attached subnet: forwarded and masqueraded
    wait_until(lambda: udp_ask(c, LANHOST, 7).startswith("192.0.2.12:"), "lanhost via the exit node", timeout=60)
    assert tcp_ask(c, LANHOST, 8080).startswith("192.0.2.12:")
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    _dropped_by_exit_node(c, ex, ISP_WAN)  # the WAN subnet is still not offered
    assert cl.stop() == 0


def test_rules_and_nft_removed_by_other_programs_come_back(exitnet):
    """`ip rule flush`-style interference on the client and `nft flush ruleset` on the exit node: both helpers
    notice within seconds (checked every 2 s), put their state back and log it."""
    lab, hs, key, c, ex, ctl = exitnet
    cl = Node(c, hs.url, auth_key=key, args=("--exit-node", "py-e")).start()
    cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved")
    assert udp_ask(c, INET, 7).startswith(f"{E_WAN}:")
    with_exit = routing_dump(c)

    c.run(["ip", "-4", "rule", "del", "pref", "5270"])  # e.g. systemd-networkd dropping foreign rules
    ex.host.run(["nft", "flush", "ruleset"])  # e.g. a firewall reload on the exit node
    wait_until(lambda: routing_dump(c) == with_exit, "c's rule 5270 re-installed", timeout=15)
    wait_until(
        lambda: "meshvpn" in ex.host.run(["nft", "list", "tables"]).stdout, "e's nft table re-installed", timeout=15
    )
    wait_until(lambda: udp_ask(c, INET, 7).startswith(f"{E_WAN}:"), "traffic via e again", timeout=30)
    assert "exit routing was changed by another program" in cl.log()
    assert "forwarding was changed by another program" in ex.log()
    assert cl.stop() == 0
