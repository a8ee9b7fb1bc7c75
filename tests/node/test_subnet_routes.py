"""Lab: advertising at run time (LocalAPI prefs edits: Hostinfo.RoutableIPs) and using a subnet route (accept-routes).

ctl 192.0.2.1 (headscale), c 192.0.2.11 (--accept-routes), e 192.0.2.12 (DrivenNode) -- inet 203.0.113.2
"""

from __future__ import annotations

import pytest

from tests.control.nodes import wait_until
from tests.node.labnode import INET, UDP_ECHO, DrivenNode, Node, route_get, start_headscale, udp_ask

pytestmark = pytest.mark.lab


def test_advertise_at_run_time_and_accept_routes(lab):
    sw = lab.switch("lan")
    ctl, c, e, inet = (lab.host(n) for n in ("ctl", "c", "e", "inet"))
    sw.attach(ctl, "192.0.2.1/24")
    sw.attach(c, "192.0.2.11/24")
    sw.attach(e, "192.0.2.12/24")
    lab.link(e, inet, "203.0.113.1/24", f"{INET}/24")
    inet.popen_python(UDP_ECHO, "0.0.0.0", "7")
    hs = start_headscale(ctl)
    key = hs.preauth_key("alice")
    ex = DrivenNode(e, hs.url, auth_key=key).start()
    ex.wait_synced(0)
    assert not hs.node_by_hostname("py-e").get("available_routes")

    def routes(kind: str) -> set:
        return set(hs.node_by_hostname("py-e").get(kind) or ())

    ex.call("set_advertise_routes", "203.0.113.0/24")  # sent as a lite MapRequest (Hostinfo.RoutableIPs)
    wait_until(lambda: routes("available_routes") == {"203.0.113.0/24"}, "route announced")
    ex.call("set_advertise_exit_node", True)
    wait_until(lambda: routes("available_routes") == {"203.0.113.0/24", "0.0.0.0/0", "::/0"}, "exit announced")
    nid = int(hs.node_by_hostname("py-e")["id"])
    hs.cli("nodes", "approve-routes", "-i", str(nid), "-r", "203.0.113.0/24", json_out=False)
    wait_until(lambda: routes("approved_routes") == {"203.0.113.0/24"}, "route approved")

    cl = Node(c, hs.url, auth_key=key, args=("--accept-routes",)).start()
    cl.wait(lambda s: any("203.0.113.0/24" in p["AllowedIPs"] for p in s.get("Peers", [])), "subnet route in map")
    assert not any(p["ExitNodeOption"] for p in cl.status()["Peers"])  # exit routes not approved
    assert "dev mesh0" in route_get(c, INET)  # main-table subnet route, no policy rules
    assert "lookup 52" not in c.run(["ip", "rule"]).stdout
    assert udp_ask(c, INET, 7).startswith("203.0.113.1:")  # forwarded and masqueraded by e

    ex.call("set_advertise_routes", [])
    ex.call("set_advertise_exit_node", False)
    wait_until(lambda: not routes("available_routes"), "routes withdrawn")
    # forwarding off again (the table stays for the input guard while the node runs)
    assert "chain forward" not in e.run(["nft", "list", "table", "inet", "meshvpn"], check=False).stdout
    assert cl.stop() == 0
    assert ex.stop() == 0, ex.log()[-6000:]
