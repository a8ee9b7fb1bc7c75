"""Lab: MagicDNS on our node names a real tailscaled peer; a headscale ACL policy holds between our node and tailscaled.

Topology: tests/exit_tailscaled/tsnet.py without the inet side (ctl, ours, ts on one LAN).
ACL policy: only alice's nodes -> bob's nodes on tcp:8080. Run twice: our node as alice
(tailscaled's filter enforces) and as bob (our filter enforces). Expected with tailscale
semantics: alice->bob:8080 works; alice->bob:8081, bob->alice:8080 and UDP are dropped by the
receiver; alice can ping bob (a rule between the two IPs), bob cannot ping alice.
"""

from __future__ import annotations

import pytest

from tests.exit_tailscaled.tsnet import OURS_NAME, TS_NAME, build, diag, eventually, start_tailscaled, ts_peer
from tests.lab.headscale import BASE_DOMAIN
from tests.node.labnode import ACL_POLICY, Node, acl_servers, assert_acl_denials, dig, tcp_ask

pytestmark = pytest.mark.lab


def test_magicdns_resolves_tailscaled_peer(lab):
    net = build(lab)
    key = net.hs.preauth_key("alice")
    t = start_tailscaled(net, key)
    ts_ip, ts_ip6 = t.ip(), t.ip(v6=True)
    na = Node(net.ours, net.hs.url, auth_key=key).start()
    na.wait_synced(1, timeout=60)
    na.wait(lambda s: s["MagicDNS"], "MagicDNS")
    c = net.ours
    fqdn = f"{TS_NAME}.{BASE_DOMAIN}"
    assert na.peer(TS_NAME)["Name"] == fqdn + "."
    d = diag(node=na, t=t)
    assert eventually(
        lambda: dig(c, "@100.100.100.100", fqdn, "+short").split() == [ts_ip], f"{fqdn} A from quad-100", 30, 0.5, d
    )
    assert dig(c, "@100.100.100.100", "+tcp", fqdn, "+short").split() == [ts_ip]
    assert dig(c, "@fd7a:115c:a1e0::53", fqdn, "+short").split() == [ts_ip]  # the IPv6 quad-100 too
    assert dig(c, "@100.100.100.100", "-x", ts_ip, "+short").split() == [fqdn + "."]
    # like tailscaled, no AAAA for a peer while we have IPv4 (no magicdns-aaaa cap): NOERROR, no answer
    out = dig(c, "@100.100.100.100", fqdn, "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out, out
    assert dig(c, "@100.100.100.100", "-x", ts_ip6, "+short").split() == []
    assert dig(c, "@100.100.100.100", f"{OURS_NAME}.{BASE_DOMAIN}", "+short").split() == [na.ip]
    assert "status: NXDOMAIN" in dig(c, "@100.100.100.100", f"nope.{BASE_DOMAIN}")
    # tailscaled and we agree on the names headscale gave out (its quad-100 answers even with --accept-dns=false)
    assert ts_peer(t, OURS_NAME)["DNSName"] == f"{OURS_NAME}.{BASE_DOMAIN}."
    assert dig(net.ts, "@100.100.100.100", f"{OURS_NAME}.{BASE_DOMAIN}", "+short").split() == [na.ip]
    ts_aaaa = dig(net.ts, "@100.100.100.100", f"{OURS_NAME}.{BASE_DOMAIN}", "AAAA")
    assert "status: NOERROR" in ts_aaaa and "ANSWER: 0" in ts_aaaa, ts_aaaa
    # the name is usable: talk to tailscaled by its MagicDNS answer over the tailnet
    ip = dig(c, "@100.100.100.100", fqdn, "+short").split()[0]
    eventually(
        lambda: c.ping(ip, count=1, timeout=2).returncode == 0, "ping tailscaled by its name's address", 90, 1.0, d
    )
    assert na.stop() == 0


@pytest.mark.parametrize("ours_user", ["alice", "bob"])
def test_acl_policy_with_tailscaled_peer(lab, ours_user):
    net = build(lab, policy=ACL_POLICY)
    ts_user = "bob" if ours_user == "alice" else "alice"
    t = start_tailscaled(net, net.hs.preauth_key(ts_user))
    na = Node(net.ours, net.hs.url, auth_key=net.hs.preauth_key(ours_user)).start()
    st = na.wait_synced(1, timeout=60)
    ours_ip, ts_ip = na.ip, t.ip()
    if ours_user == "bob":  # headscale sends the rule to the destination's nodes only
        assert st["Filter"]["Rules"] >= 1, st["Filter"]
    else:
        assert st["Filter"]["Rules"] == 0, st["Filter"]
    hosts = {"ours": (net.ours, ours_ip), "ts": (net.ts, ts_ip)}
    acl_servers(*hosts.values())
    (ah, a_ip), (bh, b_ip) = (hosts["ours"], hosts["ts"]) if ours_user == "alice" else (hosts["ts"], hosts["ours"])
    d = diag(node=na, t=t)

    # allowed: alice -> bob tcp/8080 (the server sees alice's tailnet address); DERP first, then direct
    got = eventually(
        lambda: (r := tcp_ask(ah, b_ip, 8080, timeout=3)).startswith(f"{a_ip}:") and r, "alice -> bob:8080", 90, 1.0, d
    )
    assert got.startswith(f"{a_ip}:"), got
    # denied: another port, the other direction, another protocol; alice may ping bob, bob not alice
    assert_acl_denials(ah, a_ip, bh, b_ip)
    # still allowed after all that, and on the direct path by now
    eventually(
        lambda: (p := ts_peer(t, OURS_NAME)) and (p.get("CurAddr") or "").startswith("192.0.2.11:"),
        "direct path between tailscaled and us",
        60,
        1.0,
        d,
    )
    assert tcp_ask(ah, b_ip, 8080).startswith(f"{a_ip}:")

    # our filter did the dropping when we are bob; as alice, it let in only replies
    if ours_user == "bob":
        na.wait(lambda s: s["Filter"]["Drops"].get("no-rules-matched", 0) >= 2, "our drops (8081 SYN, UDP)")
    else:
        na.wait(lambda s: s["Filter"]["Drops"].get("no-rules-matched", 0) >= 2, "our drops (bob's SYN, UDP, ping)")
    na.wait(lambda s: s["Filter"]["AcceptedIn"] > 0, "our accepted packets")
    assert na.proc.poll() is None
    assert na.stop() == 0
