"""Lab topology for exit-node / MagicDNS / ACL interop with a real tailscaled (TUN mode), plus waits and probes.

    ctl 192.0.2.1 (headscale + embedded DERP/STUN)
        |
    ----+------ switch lan 192.0.2.0/24 -------------+
             |                                        |
       ours 192.0.2.11 (our mesh-helper, mesh0)    ts 192.0.2.12 (tailscaled, tailscale0)

    exit side X (ours or ts):
      X 198.51.100.2/24, 2001:db8:2::2/64 -- isp (router) -- inet 203.0.113.2/24, 2001:db8:1::2/64
      (X routes only 203.0.113.0/24 and 2001:db8:1::/64 via isp; inet runs udp echo :7 and tcp
      whoami :8080, both reporting the source address they saw)

"inet" is reachable only through X (the exit node's WAN side). The isp router does not NAT, so
the source inet reports is the address the packet left X with: X's WAN address proves that X
masqueraded it. inet sits one router away from X on purpose: tailscaled as an exit node drops
traffic to its own directly connected subnets (its filter's "local nets" are the default route
minus interface prefixes, ipn/ipnlocal shrinkDefaultRoute: a "guest Wi-Fi" exit node).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.lab.headscale import Headscale
from tests.lab.netlab import Host, Lab, LabError
from tests.lab.peers import PeerMissing, peer_bin
from tests.lab.tailscaled import Tailscaled
from tests.node.labnode import INET, INET6, UDP_ECHO, Node, tcp_whoami

CTL_IP = "192.0.2.1"
OURS_LAN = "192.0.2.11"
TS_LAN = "192.0.2.12"
WAN_IP, WAN_IP6 = "198.51.100.2", "2001:db8:2::2"  # the exit node's WAN address (towards isp)
ISP_WAN, ISP_WAN6 = "198.51.100.1", "2001:db8:2::1"
ISP_INET, ISP_INET6 = "203.0.113.1", "2001:db8:1::1"
TS_NAME = "tsnode"  # tailscaled's hostname (headscale given_name)
OURS_NAME = "py-ours"  # labnode.Node names itself py-<host>
TS_ENV = {"TS_DEBUG_FIREWALL_MODE": "nftables"}  # no iptables binary here; tailscaled then uses netlink nftables


class EngineGap(AssertionError):
    """Our node differs from tailscaled here (a known engine gap); `xfail(raises=EngineGap)` hides only this failure."""


def need_peers() -> None:
    try:
        peer_bin("headscale")
        peer_bin("tailscaled")
        peer_bin("tailscale")
    except PeerMissing as e:
        pytest.skip(str(e))


@dataclass
class TsNet:
    lab: Lab
    ctl: Host
    ours: Host
    ts: Host
    inet: Host | None
    hs: Headscale


def build(lab: Lab, *, exit_side: str | None = None, policy: dict | None = None) -> TsNet:
    """Hosts, links and headscale; ``exit_side`` ("ours" / "ts") gets the link to inet (None: no inet)."""
    need_peers()
    sw = lab.switch("lan")
    ctl, ours, ts = lab.host("ctl"), lab.host("ours"), lab.host("ts")
    sw.attach(ctl, f"{CTL_IP}/24")
    sw.attach(ours, f"{OURS_LAN}/24")
    sw.attach(ts, f"{TS_LAN}/24")
    inet = None
    if exit_side is not None:
        x = {"ours": ours, "ts": ts}[exit_side]
        isp, inet = lab.host("isp"), lab.host("inet")
        lab.link(x, isp, f"{WAN_IP}/24", f"{ISP_WAN}/24", a_addr6=f"{WAN_IP6}/64", b_addr6=f"{ISP_WAN6}/64")
        lab.link(isp, inet, f"{ISP_INET}/24", f"{INET}/24", a_addr6=f"{ISP_INET6}/64", b_addr6=f"{INET6}/64")
        isp.sysctl("net.ipv4.ip_forward", 1)
        isp.sysctl("net.ipv6.conf.all.forwarding", 1)
        x.add_route("203.0.113.0/24", via=ISP_WAN)
        x.add_route("2001:db8:1::/64", via=ISP_WAN6)
        inet.set_default_route(ISP_INET)
        inet.set_default_route(ISP_INET6)
        inet.popen_python(UDP_ECHO, INET6, "7")
        inet.popen_python(UDP_ECHO, "0.0.0.0", "7")
        tcp_whoami(inet, "0.0.0.0", 8080)
        inet.wait_for(["sh", "-c", "ss -lun | grep -q ':7 '"])
    hs = Headscale(ctl, policy=policy).start()
    return TsNet(lab, ctl, ours, ts, inet, hs)


def start_tailscaled(net: TsNet, auth_key: str, *extra_up: str, forwarding: bool = False) -> Tailscaled:
    """tailscaled (TUN tailscale0, nftables firewall) in ``ts``, `tailscale up` as TS_NAME."""
    if forwarding:  # tailscaled only warns when these are off; an exit node needs them
        net.ts.sysctl("net.ipv4.ip_forward", 1)
        net.ts.sysctl("net.ipv6.conf.all.forwarding", 1)
    t = Tailscaled(net.ts, extra_env=TS_ENV).start()
    t.up(net.hs.url, auth_key, TS_NAME, *extra_up)
    return t


def eventually(
    fn: Callable[[], object],
    what: str,
    timeout: float = 60,
    interval: float = 0.5,
    diag: Callable[[], str] | None = None,
):
    """Poll ``fn`` until truthy (returned); on timeout raise with the last value and ``diag()``."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except LabError as e:
            last = f"LabError: {e}"
        if last and not (isinstance(last, str) and last.startswith("LabError")):
            return last
        if time.monotonic() > deadline:
            extra = ""
            if diag is not None:
                try:
                    extra = diag()
                except Exception as e:  # noqa: BLE001 - diagnostics must not hide the failure
                    extra = f"(diag failed: {e})"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}\n{extra}")
        time.sleep(interval)


def ts_peer(t: Tailscaled, hostname: str) -> dict | None:
    """tailscaled's `status --json` entry for the peer with HostName ``hostname``."""
    for p in t.peers():
        if p.get("HostName") == hostname or (p.get("DNSName") or "").split(".")[0] == hostname:
            return p
    return None


def diag(*, node: Node | None = None, t: Tailscaled | None = None) -> Callable[[], str]:
    """A diagnostics closure for ``eventually``: our status + log tail, tailscaled status + log tail."""

    def run() -> str:
        parts = []
        if node is not None:
            st = node.status()
            st.pop("Peers", None)
            parts.append(f"our status: {json.dumps(st)[:1500]}\nour log:\n{node.log()[-4000:]}")
            parts.append("our peers: " + json.dumps(node.status().get("Peers"))[:1500])
        if t is not None:
            try:
                parts.append(
                    "tailscaled peers: "
                    + json.dumps(
                        [
                            {
                                k: p.get(k)
                                for k in (
                                    "HostName",
                                    "TailscaleIPs",
                                    "CurAddr",
                                    "Relay",
                                    "Online",
                                    "ExitNode",
                                    "ExitNodeOption",
                                    "RxBytes",
                                    "TxBytes",
                                )
                            }
                            for p in t.peers()
                        ]
                    )
                )
            except LabError as e:
                parts.append(f"tailscaled status failed: {e}")
            parts.append(f"tailscaled log:\n{t.log()[-3000:]}")
        return "\n".join(parts)

    return run


def approve_exit(hs: Headscale, hostname: str, timeout: float = 60) -> int:
    """Wait for ``hostname`` to announce 0.0.0.0/0 and ::/0, approve both; returns its node ID."""
    n = eventually(
        lambda: (
            (n := hs.node_by_hostname(hostname)) and {"0.0.0.0/0", "::/0"} <= set(n.get("available_routes") or ()) and n
        ),
        f"{hostname} to announce exit routes",
        timeout,
    )
    nid = int(n["id"])
    hs.cli("nodes", "approve-routes", "-i", str(nid), "-r", "0.0.0.0/0,::/0", json_out=False)
    eventually(
        lambda: {"0.0.0.0/0", "::/0"} <= set((hs.node_by_hostname(hostname) or {}).get("approved_routes") or ()),
        f"{hostname}'s exit routes approved",
        30,
    )
    return nid


def socket_lines(h: Host, proto: str = "u", pid: int | None = None) -> list[str]:
    """`ss -{proto}anpe` lines (optionally only those of process ``pid``)."""
    out = h.run(["ss", f"-{proto}anpeH"]).stdout.splitlines()
    return [ln for ln in out if pid is None or f"pid={pid}," in ln]


def helper_pid(node: Node) -> int:
    """PID of our helper process (Host.popen runs `ip netns exec`, which execs the command: same pid)."""
    return node.proc.pid


__all__ = [
    "EngineGap",
    "CTL_IP",
    "OURS_LAN",
    "TS_LAN",
    "WAN_IP",
    "WAN_IP6",
    "TS_NAME",
    "OURS_NAME",
    "TsNet",
    "approve_exit",
    "build",
    "diag",
    "eventually",
    "helper_pid",
    "need_peers",
    "socket_lines",
    "start_tailscaled",
    "ts_peer",
    "ISP_WAN",
    "ISP_WAN6",
    "ISP_INET",
    "ISP_INET6",
    "TS_ENV",
]
