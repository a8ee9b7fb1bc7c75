"""Lab: an exit node forwards to the internet, not into its attached subnets ("guest Wi-Fi"); tailscaled as reference.

tailscaled offering 0.0.0.0/0 + ::/0 treats as local (filter) the default route minus its
interface subnets (re-adding its own host addresses) minus RFC 1918, link-local, multicast
and the tailnet ranges (ipn/ipnlocal shrinkDefaultRoute / removeFromDefaultRoute). So an exit
node's client reaches the internet and the exit node's own address, but not the hosts on the
exit node's LAN/WAN subnets unless those are advertised as subnet routes.

Probe: the isp router (198.51.100.1, on the exit node's directly attached WAN subnet) runs a
UDP echo; so does the exit node itself on its WAN address (198.51.100.2).
"""

from __future__ import annotations

import pytest

from tests.exit_tailscaled.tsnet import (
    ISP_WAN,
    OURS_NAME,
    TS_NAME,
    WAN_IP,
    approve_exit,
    build,
    diag,
    eventually,
    start_tailscaled,
    ts_peer,
)
from tests.node.labnode import INET, UDP_ECHO, Node, udp_ask

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("exit_side", ["ts", "ours"])
def test_exit_node_does_not_forward_into_its_attached_subnets(lab, exit_side):
    net = build(lab, exit_side=exit_side)
    key = net.hs.preauth_key("alice")
    isp = net.lab.hosts["isp"]
    isp.popen_python(UDP_ECHO, "0.0.0.0", "7")
    isp.wait_for(["sh", "-c", "ss -lun | grep -q ':7 '"])
    x = net.ts if exit_side == "ts" else net.ours
    x.popen_python(UDP_ECHO, WAN_IP, "7")
    x.wait_for(["sh", "-c", f"ss -lun | grep -q '{WAN_IP}:7 '"])
    if exit_side == "ts":
        t = start_tailscaled(net, key, "--advertise-exit-node", forwarding=True)
        approve_exit(net.hs, TS_NAME)
        node = Node(net.ours, net.hs.url, auth_key=key, args=("--exit-node", t.ip())).start()
        node.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved", 60)
        client, client_ip = net.ours, node.ip
    else:
        node = Node(net.ours, net.hs.url, auth_key=key, args=("--advertise-exit-node",)).start()
        node.wait_synced(0, timeout=60)
        approve_exit(net.hs, OURS_NAME)
        t = start_tailscaled(net, key)
        eventually(lambda: (p := ts_peer(t, OURS_NAME)) and p.get("ExitNodeOption"), "exit option", 60)
        t.cli("set", f"--exit-node={node.ip}")
        client, client_ip = net.ts, t.ip()
    d = diag(node=node, t=t)

    # the internet works through the exit node, masqueraded to its WAN address ...
    eventually(lambda: udp_ask(client, INET, 7).startswith(f"{WAN_IP}:"), "internet via the exit node", 90, 1.0, d)
    # ... the exit node's own WAN address is reachable (delivered locally: it sees the client's tailnet address) ...
    assert udp_ask(client, WAN_IP, 7).startswith(f"{client_ip}:")
    # ... but a host on the exit node's attached WAN subnet is not
    got = udp_ask(client, ISP_WAN, 7, tries=3)
    assert got == "timeout", f"{exit_side} exit node forwarded into its attached subnet: {ISP_WAN} answered {got!r}"
