"""Lab: DNS while an exit node is in use: tailscale sends it through the exit node (DoH on the exit node's peerAPI).

tailscale (ipn/ipnlocal dnsConfigForNetmap, exitNodeCanProxyDNS): with an exit node that can
proxy DNS, the default resolver becomes ``<exit node peerAPI>/dns-query`` (DNS over HTTPS over
the tailnet, answered by the exit node's own resolver), so names are resolved where the traffic
exits and no query leaks to the local network's DNS server.

    landns 192.0.2.53 on the LAN (our namespace's resolv.conf): www.example.org -> 192.0.2.80
    inet 203.0.113.2 behind the exit node (ts's resolv.conf):   www.example.org -> 203.0.113.80

The other direction matters more for interop: a tailscaled client (accept-dns is its default)
whose exit node is ours decides from our capability version alone (peerCanProxyDNS: Cap >= 26)
that we proxy DNS, and uses ``peerAPIBase(us) + "/dns-query"`` as its only default resolver.
"""

from __future__ import annotations

import json

import pytest

from tests.exit_tailscaled.tsnet import (
    OURS_NAME,
    TS_ENV,
    TS_NAME,
    approve_exit,
    build,
    diag,
    eventually,
    start_tailscaled,
    ts_peer,
)
from tests.lab.netlab import Host
from tests.lab.tailscaled import Tailscaled
from tests.node.labnode import INET, UPSTREAM_DNS, Node, dig, netns_resolv_conf

pytestmark = pytest.mark.lab

NAME = "www.example.org."
LAN_ZONE = {NAME: "192.0.2.80"}
EXIT_ZONE = {NAME: "203.0.113.80"}
DOH_GET = (
    "import base64, sys, urllib.request\n"
    "import dns.message\n"
    "q = dns.message.make_query(sys.argv[2], 'A')\n"
    "b = base64.urlsafe_b64encode(q.to_wire()).rstrip(b'=').decode()\n"
    "req = urllib.request.Request(sys.argv[1] + '/dns-query?dns=' + b, headers={'Accept': 'application/dns-message'})\n"
    "r = dns.message.from_wire(urllib.request.urlopen(req, timeout=10).read())\n"
    "print(' '.join(rd.to_text() for rr in r.answer for rd in rr))\n"
)


def test_dns_goes_through_the_tailscaled_exit_node(lab):
    net = build(lab, exit_side="ts")
    landns = lab.host("landns")
    lab.switches["lan"].attach(landns, "192.0.2.53/24")
    lan_dns = landns.popen_python(UPSTREAM_DNS, "192.0.2.53", "53", json.dumps(LAN_ZONE))
    net.inet.popen_python(UPSTREAM_DNS, INET, "53", json.dumps(EXIT_ZONE))
    landns.wait_for(["sh", "-c", "ss -lun | grep -q 192.0.2.53:53"])
    net.inet.wait_for(["sh", "-c", f"ss -lun | grep -q {INET}:53"])
    key = net.hs.preauth_key("alice")
    with (
        netns_resolv_conf(net.ts.ns, f"nameserver {INET}\n"),
        netns_resolv_conf(net.ours.ns, "nameserver 192.0.2.53\noptions timeout:1 attempts:2\n"),
    ):
        t = start_tailscaled(net, key, "--advertise-exit-node", forwarding=True)
        approve_exit(net.hs, TS_NAME)
        c = net.ours
        cl = Node(c, net.hs.url, auth_key=key).start()
        cl.wait_synced(1, timeout=60)
        d = diag(node=cl, t=t)
        # without an exit node: our quad-100 forwards to the namespace's own resolver (the LAN's)
        assert eventually(
            lambda: dig(c, "@100.100.100.100", NAME, "+short").split() == ["192.0.2.80"],
            "LAN answer without exit node",
            30,
            1.0,
            d,
        )
        # reference: tailscaled's peerAPI DoH answers from the exit side (reached over our tunnel)
        peerapi = next(u for u in t.status()["Self"]["PeerAPIURL"] if "[" not in u)
        got = eventually(
            lambda: c.exec_python(DOH_GET, peerapi, NAME, check=False).stdout.split(),
            "tailscaled's DoH over the tailnet",
            60,
            1.0,
            d,
        )
        assert got == ["203.0.113.80"], got

        cl.stop()
        cl = Node(c, net.hs.url, args=("--exit-node", TS_NAME)).start()
        cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved", 60)
        queries_before = Host.log_of(lan_dns).count("udp ")
        answer = dig(c, "@100.100.100.100", NAME, "+short").split()
        leaked = Host.log_of(lan_dns).count("udp ") - queries_before
        assert cl.stop() == 0
        assert answer == ["203.0.113.80"] and not leaked, (
            f"with exit node {TS_NAME}: answer {answer}, {leaked} queries to the LAN DNS server"
        )


def test_tailscaled_client_resolves_through_our_exit_node(lab):
    """tailscaled (userspace networking: its OS DNS configurator is a no-op) with accept-dns, exit node = ours."""
    net = build(lab, exit_side="ours")
    net.inet.popen_python(UPSTREAM_DNS, INET, "53", json.dumps(EXIT_ZONE))
    net.inet.wait_for(["sh", "-c", f"ss -lun | grep -q {INET}:53"])
    key = net.hs.preauth_key("alice")
    with netns_resolv_conf(net.ours.ns, f"nameserver {INET}\noptions timeout:1 attempts:2\n"):
        ex = Node(net.ours, net.hs.url, auth_key=key, args=("--advertise-exit-node",)).start()
        ex.wait_synced(0, timeout=60)
        approve_exit(net.hs, OURS_NAME)
        t = Tailscaled(net.ts, tun="userspace-networking", extra_env=TS_ENV).start()
        t.up(net.hs.url, key, TS_NAME)
        d = diag(node=ex, t=t)
        eventually(lambda: (p := ts_peer(t, OURS_NAME)) and p.get("ExitNodeOption"), "our exit option", 60, 1.0, d)
        # our own resolver answers from the exit side (the namespace's upstream is inet)
        assert eventually(
            lambda: dig(net.ours, "@100.100.100.100", NAME, "+short").split() == ["203.0.113.80"],
            "our quad-100 answer",
            30,
            1.0,
            d,
        )
        t.cli("set", "--accept-dns=true", f"--exit-node={ex.ip}")
        eventually(lambda: (p := ts_peer(t, OURS_NAME)) and p.get("ExitNode"), "ExitNode in tailscaled", 30, 0.5, d)

        def ts_query() -> str:
            return t.cli("dns", "query", NAME.rstrip("."), check=False, timeout=40).stdout

        out = ts_query()
        for _ in range(5):  # our tunnel may still be coming up (DERP, then direct)
            if "203.0.113.80" in out:
                break
            out = ts_query()
        assert ex.stop() == 0
        assert "203.0.113.80" in out, (
            f"tailscaled client using our exit node cannot resolve {NAME}: {out.strip()[:400]}"
        )
