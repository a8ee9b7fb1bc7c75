"""Fixtures for tests/node: the shared `lab`, and `exitnet` (headscale, an exit node of ours, an "internet").

    ctl 192.0.2.1 (headscale)   lanhost 192.0.2.20 (udp echo :7, tcp whoami :8080)
        |                           |
    ----+------ switch lan 192.0.2.0/24 ------+-------------------+
                    |                                             |
              c 192.0.2.11 (node not started)            e 192.0.2.12 (our node: --advertise-exit-node, approved)
                                                                  | 203.0.113.1/31, 2001:db8:2::2/64   (e's WAN)
                                                         isp 203.0.113.0/31, 2001:db8:2::1/64   (router, no NAT)
                                                                  | 203.0.113.3/31, 2001:db8:1::1/64
                                                         inet 203.0.113.2/31, 2001:db8:1::2/64 (echo :7, whoami :8080)

"inet" is reachable only through e; the echo servers reply with the source address they saw
(e masquerades: 203.0.113.1 / 2001:db8:2::2). inet sits one router away from e on purpose: an
exit node's filter treats as local the default route minus its attached subnets ("guest Wi-Fi",
engine/filter/localnets.py, as tailscale), so e's clients reach the internet and e's own
addresses, but neither lanhost (e's LAN) nor isp (e's WAN subnet) unless e advertises that subnet.
"""

import pytest

from tests.control.nodes import wait_until
from tests.lab.fixtures import lab  # noqa: F401
from tests.node.labnode import INET, INET6, LANHOST, UDP_ECHO, Node, approve_exit_routes, start_headscale, tcp_whoami

E_WAN, E_WAN6 = "203.0.113.1", "2001:db8:2::2"  # e's WAN addresses: what inet sees after e's masquerade
ISP_WAN, ISP_WAN6 = "203.0.113.0", "2001:db8:2::1"  # isp on e's WAN subnet (runs a udp echo :7)


@pytest.fixture
def exitnet(lab):  # noqa: F811
    sw = lab.switch("lan")
    ctl, c, e, lanhost, inet = (lab.host(n) for n in ("ctl", "c", "e", "lanhost", "inet"))
    sw.attach(ctl, "192.0.2.1/24")
    sw.attach(c, "192.0.2.11/24")
    sw.attach(e, "192.0.2.12/24")
    sw.attach(lanhost, f"{LANHOST}/24")
    isp = lab.host("isp")
    lab.link(e, isp, f"{E_WAN}/31", f"{ISP_WAN}/31", a_addr6=f"{E_WAN6}/64", b_addr6=f"{ISP_WAN6}/64")
    lab.link(isp, inet, "203.0.113.3/31", f"{INET}/31", a_addr6="2001:db8:1::1/64", b_addr6=f"{INET6}/64")
    isp.sysctl("net.ipv4.ip_forward", 1)
    isp.sysctl("net.ipv6.conf.all.forwarding", 1)
    e.add_route("203.0.113.0/24", via=ISP_WAN)
    e.add_route("2001:db8:1::/64", via=ISP_WAN6)
    inet.set_default_route("203.0.113.3")
    inet.set_default_route("2001:db8:1::1")
    inet.popen_python(UDP_ECHO, INET6, "7")
    isp.popen_python(UDP_ECHO, "0.0.0.0", "7")  # a probe on e's WAN subnet
    for h, addr in ((inet, "0.0.0.0"), (lanhost, "0.0.0.0")):
        h.popen_python(UDP_ECHO, addr, "7")
        tcp_whoami(h, addr, 8080)
    hs = start_headscale(ctl)
    key = hs.preauth_key("alice")
    ex = Node(e, hs.url, auth_key=key, args=("--advertise-exit-node",)).start()
    ex.wait_synced(0)
    approve_exit_routes(hs, "py-e")
    wait_until(
        lambda: {"0.0.0.0/0", "::/0"} <= set(hs.node_by_hostname("py-e").get("approved_routes") or ()),
        "exit routes approved",
    )
    return lab, hs, key, c, ex, ctl
