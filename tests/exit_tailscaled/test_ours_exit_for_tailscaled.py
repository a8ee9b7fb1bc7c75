"""Lab: our node as the exit node of a real tailscaled client (`tailscale set --exit-node=<our IP>`).

Topology: tests/exit_tailscaled/tsnet.py with the WAN link on ours. inet (behind the isp router)
reports the source address it saw: our WAN address proves our node forwarded and masqueraded
the tailscaled client's traffic.
"""

from __future__ import annotations

import pytest

from tests.exit_tailscaled.tsnet import (
    OURS_LAN,
    OURS_NAME,
    WAN_IP,
    WAN_IP6,
    approve_exit,
    build,
    diag,
    eventually,
    start_tailscaled,
    ts_peer,
)
from tests.node.labnode import INET, INET6, Node, route_get, tcp_ask, udp_ask

pytestmark = pytest.mark.lab


def test_our_exit_node_for_tailscaled_client(lab):
    net = build(lab, exit_side="ours")
    key = net.hs.preauth_key("alice")
    ex = Node(net.ours, net.hs.url, auth_key=key, args=("--advertise-exit-node",)).start()
    ex.wait_synced(0, timeout=60)
    approve_exit(net.hs, OURS_NAME)
    t = start_tailscaled(net, key)
    ts = net.ts
    ex.wait_synced(1, timeout=60)
    our_ip, our_ip6 = ex.ip, ex.status()["Self"]["Addresses"][1].split("/")[0]
    d = diag(node=ex, t=t)

    # tailscaled sees our node as an exit-node option (approved 0.0.0.0/0 + ::/0 in its netmap)
    peer = eventually(
        lambda: (p := ts_peer(t, OURS_NAME)) and p.get("ExitNodeOption") and p,
        "our node offered as exit node to tailscaled",
        60,
        1.0,
        d,
    )
    assert {"0.0.0.0/0", "::/0"} <= set(peer["AllowedIPs"]), peer
    assert udp_ask(ts, INET, 7, tries=1).startswith("error")  # no route to inet without the exit node
    # plain tailnet traffic first (DERP, then direct)
    eventually(lambda: ts.ping(our_ip, count=1, timeout=2).returncode == 0, "tailscaled pings us", 90, 1.0, d)

    t.cli("set", f"--exit-node={our_ip}")
    assert eventually(
        lambda: (p := ts_peer(t, OURS_NAME)) and p.get("ExitNode"), "ExitNode in tailscaled status", 30, 0.5, d
    )
    got = route_get(ts, INET)
    assert "dev tailscale0" in got and "table 52" in got, got  # tailscaled's own policy routing

    # the tailscaled client's internet traffic leaves through us, masqueraded to our WAN address
    got = eventually(
        lambda: (r := udp_ask(ts, INET, 7)).startswith(f"{WAN_IP}:") and r,
        "tailscaled's UDP via our exit node",
        90,
        1.0,
        d,
    )
    assert got.startswith(f"{WAN_IP}:"), got
    assert tcp_ask(ts, INET, 8080, timeout=10).startswith(f"{WAN_IP}:")
    assert eventually(lambda: udp_ask(ts, INET6, 7).startswith(f"{WAN_IP6}:"), "IPv6 via our exit node", 30, 1.0, d)
    # tailscaled talks to us directly on the LAN (not only via DERP), and we count what our filter let in
    eventually(
        lambda: (p := ts_peer(t, OURS_NAME)) and (p.get("CurAddr") or "").startswith(f"{OURS_LAN}:"),
        "tailscaled's direct path to us",
        60,
        1.0,
        d,
    )
    assert udp_ask(ts, INET, 7).startswith(f"{WAN_IP}:")
    ex.wait(lambda s: s["Filter"]["AcceptedIn"] > 0, "our filter to count accepted packets")
    # the forwarded flows went through our nft table (masquerade), from the tailscaled client's tailnet address
    ts_ip = t.ip()
    ct = net.ours.run(["conntrack", "-L", "-s", ts_ip], check=False).stdout
    assert INET in ct and f"dst={WAN_IP}" in ct, ct
    # our node as a plain peer still answers on its own address
    assert ts.ping(our_ip, count=1, timeout=3).returncode == 0
    assert ts.ping(our_ip6, count=1, timeout=3).returncode == 0

    # clearing it on the Go side: inet unreachable again, our node keeps serving other traffic
    t.cli("set", "--exit-node=")
    eventually(
        lambda: ts.run(["ip", "route", "get", INET], check=False).returncode != 0, "tailscaled's exit route removed", 30
    )
    assert udp_ask(ts, INET, 7, tries=1).startswith("error")
    assert ts.ping(our_ip, count=1, timeout=3).returncode == 0
    assert ex.proc.poll() is None
    assert ex.stop() == 0
