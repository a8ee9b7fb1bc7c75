"""Lab: a headscale ACL policy enforced by our nodes' packet filters (both directions, TCP, UDP, ICMP).

Policy: only alice's nodes -> bob's nodes on tcp:8080. Node a belongs to alice, b to bob.
Expected (tailscale filter semantics): a->b:8080 works; a->b:8081, b->a:8080 and UDP are
dropped by the receiver's filter; a can ping b (echo requests need a rule between the two
IPs, ports ignored), b cannot ping a; replies and established flows always pass.
"""

from __future__ import annotations

import time

import pytest

from tests.node.labnode import ACL_POLICY, Node, acl_servers, assert_acl_denials, start_headscale, tcp_ask

pytestmark = pytest.mark.lab

HTTP_STATUS = (
    "import sys, urllib.error, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code)\n"
)


def peerapi_port(h, ip: str) -> int:
    """The TCP port our helper listens on at its tailnet address (the peerAPI)."""
    for _ in range(100):
        for ln in h.run(["ss", "-ltnH"]).stdout.splitlines():
            local = ln.split()[3]
            if local.startswith(f"{ip}:") and not local.endswith((":8080", ":8081")):  # not the test's servers
                return int(local.rsplit(":", 1)[1])
        time.sleep(0.1)
    raise AssertionError(f"no peerAPI listener on {ip}: {h.run(['ss', '-ltn']).stdout}")


def test_acl_policy_enforced(lab):
    sw = lab.switch("lan")
    ctl, a, b = (lab.host(n) for n in ("ctl", "a", "b"))
    sw.attach(ctl, "192.0.2.1/24")
    sw.attach(a, "192.0.2.11/24")
    sw.attach(b, "192.0.2.12/24")
    hs = start_headscale(ctl, policy=ACL_POLICY)
    na = Node(a, hs.url, auth_key=hs.preauth_key("alice")).start()
    nb = Node(b, hs.url, auth_key=hs.preauth_key("bob")).start()
    sa, sb = na.wait_synced(1), nb.wait_synced(1)
    assert sb["Filter"]["Rules"] >= 1 and sa["Filter"]["Rules"] == 0, (sa["Filter"], sb["Filter"])
    a_ip, b_ip = na.ip, nb.ip
    acl_servers((a, a_ip), (b, b_ip))

    # allowed: a -> b tcp/8080 (the server sees a's tailnet address)
    got = tcp_ask(a, b_ip, 8080)
    assert got.startswith(f"{a_ip}:"), got
    # denied: another port, the other direction, another protocol; a may ping b (a rule a->b exists), not b a
    assert_acl_denials(a, a_ip, b, b_ip)
    # the peerAPI port passes the packet filter whatever the ACL (as in tailscale); the peerAPI's own access rules
    # then answer at L7: b (another user, a offers no exit node) may not use a's DNS
    port = peerapi_port(a, a_ip)
    assert b.exec_python(HTTP_STATUS, f"http://{a_ip}:{port}/dns-query?q=example.org").stdout.strip() == "403"
    # still allowed after all that
    assert tcp_ask(a, b_ip, 8080).startswith(f"{a_ip}:")

    drops_b = nb.wait(lambda s: s["Filter"]["Drops"].get("no-rules-matched", 0) >= 2, "b's drops")["Filter"]
    drops_a = na.wait(lambda s: s["Filter"]["Drops"].get("no-rules-matched", 0) >= 2, "a's drops")["Filter"]
    assert drops_b["AcceptedIn"] > 0 and drops_a["AcceptedIn"] > 0  # replies got in
    assert na.proc.poll() is None and nb.proc.poll() is None
