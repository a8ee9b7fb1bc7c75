"""Lab: our node uses a real tailscaled as exit node (tailscaled --advertise-exit-node, approved in headscale).

Topology: tests/exit_tailscaled/tsnet.py with the inet link on ts. The echo servers on inet
report the source address they saw; inet can only answer ts's WAN address (203.0.113.1).
"""

from __future__ import annotations

import signal

import pytest

from engine.router.exitnode import BYPASS_MARK
from tests.control.nodes import start_serve
from tests.exit_tailscaled.tsnet import (
    CTL_IP,
    OURS_LAN,
    OURS_NAME,
    TS_LAN,
    TS_NAME,
    WAN_IP,
    WAN_IP6,
    approve_exit,
    build,
    diag,
    eventually,
    helper_pid,
    socket_lines,
    start_tailscaled,
    ts_peer,
)
from tests.helper.keyfile import key_file_arg
from tests.lab.capture import Capture
from tests.node.labnode import INET, INET6, DrivenNode, Node, route_get, routing_dump, tcp_ask, udp_ask

pytestmark = pytest.mark.lab


def _ts_exit_offered(node: Node, ts_ip: str) -> dict:
    return node.wait(
        lambda s: any(
            p["ExitNodeOption"] and ts_ip in [a.split("/")[0] for a in p["Addresses"]] for p in s.get("Peers", [])
        ),
        f"{TS_NAME} offered as exit node",
        timeout=60,
    )


def _setup(lab):
    net = build(lab, exit_side="ts")
    key = net.hs.preauth_key("alice")
    t = start_tailscaled(net, key, "--advertise-exit-node", forwarding=True)
    approve_exit(net.hs, TS_NAME)
    ts_ip, ts_ip6 = t.ip(), t.ip(v6=True)
    return net, key, t, ts_ip, ts_ip6


def _our_sockets_bypass(net, pid: int, derp: bool = False) -> None:
    """Our helper's control/DERP (TCP to headscale) and WireGuard/disco (UDP) sockets carry the bypass mark.

    ``derp``: the home DERP connection is up too (headscale's embedded DERP shares its port with
    control, so then there are at least two marked connections to it).
    """
    c, ctl = net.ours, net.ctl
    # a marked route lookup to headscale uses the LAN, an unmarked one would enter the tunnel
    assert "dev eth0" in route_get(c, CTL_IP, BYPASS_MARK)
    assert "dev mesh0" in route_get(c, CTL_IP)
    # every UDP socket but the MagicDNS listeners (WireGuard/disco/STUN on the magicsock port, DNS upstreams)
    udp = [ln for ln in socket_lines(c, "u", pid) if "100.100.100.100:53 " not in ln and "a1e0::53]:53 " not in ln]
    assert udp and all("fwmark:0x80000" in ln for ln in udp), socket_lines(c, "u", pid)

    def to_headscale() -> list[str]:
        return [ln for ln in socket_lines(c, "t", pid) if f"{CTL_IP}:8080" in ln and "ESTAB" in ln]

    tcp = eventually(
        lambda: len(to_headscale()) >= (2 if derp else 1) and to_headscale(),
        "our control (and DERP) connections to headscale",
        30,
        0.5,
        lambda: "\n".join(socket_lines(c, "t")),
    )
    assert all("fwmark:0x80000" in ln and f"{OURS_LAN}:" in ln for ln in tcp), tcp
    # headscale sees our connections (control, DERP) from our LAN address, not via the exit node
    est = ctl.run(["ss", "-tnH", "state", "established", "( sport = :8080 )"]).stdout
    assert f"{OURS_LAN}:" in est, est


def _direct_from_ts(t, timeout: float = 90) -> dict:
    """tailscaled's view of us: a direct path to our LAN endpoint (so our WireGuard UDP is not tunnelled)."""
    return eventually(
        lambda: (p := ts_peer(t, OURS_NAME)) and (p.get("CurAddr") or "").startswith(f"{OURS_LAN}:") and p,
        "tailscaled to reach us directly",
        timeout,
        1.0,
        diag(t=t),
    )


def test_tailscaled_exit_node_by_flag(lab):
    net, key, t, ts_ip, ts_ip6 = _setup(lab)
    c = net.ours
    before = routing_dump(c)
    assert udp_ask(c, INET, 7, tries=1).startswith("error")  # no route to the "internet" without the exit node

    cl = Node(c, net.hs.url, auth_key=key, args=("--exit-node", ts_ip)).start()
    st = cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved", timeout=60)
    assert ts_ip in [a.split("/")[0] for p in st["Peers"] if p["ID"] == st["ExitNodeID"] for a in p["Addresses"]]
    got = route_get(c, INET)
    assert "dev mesh0" in got and "table 52" in got, got
    _our_sockets_bypass(net, helper_pid(cl))

    # internet traffic leaves through tailscaled, masqueraded to its WAN address (DERP first, then direct)
    d = diag(node=cl, t=t)
    got = eventually(
        lambda: (r := udp_ask(c, INET, 7)).startswith(f"{WAN_IP}:") and r, "UDP via tailscaled", 90, 1.0, d
    )
    assert got.startswith(f"{WAN_IP}:")
    assert tcp_ask(c, INET, 8080, timeout=10).startswith(f"{WAN_IP}:")
    assert eventually(lambda: udp_ask(c, INET6, 7).startswith(f"{WAN_IP6}:"), "IPv6 via tailscaled", 30, 1.0, d)
    # tailscaled lists us with it as our exit node's client: traffic counted, path direct to our LAN address
    peer = _direct_from_ts(t)
    assert peer["RxBytes"] > 0 and peer["TxBytes"] > 0, peer
    assert any(":41641 " in ln for ln in socket_lines(c, "u", helper_pid(cl)))  # tailscaled reached this socket
    assert udp_ask(c, INET, 7).startswith(f"{WAN_IP}:")  # still fine on the direct path
    _our_sockets_bypass(net, helper_pid(cl), derp=True)

    # a control (and DERP) connection dialled while table 52 is in force: headscale restart, we reconnect directly.
    # Captured on both sides of the tunnel: on the LAN our control traffic to headscale is plain TCP from our LAN
    # address, and not one packet for headscale's address enters the tunnel (mesh0) or leaves the exit node's WAN
    # (eth1).
    with (
        Capture(c, "eth0", f"host {CTL_IP}") as lan_cap,
        Capture(c, "mesh0", f"host {CTL_IP}") as tun_cap,
        Capture(net.ts, "eth1", f"host {CTL_IP}") as exit_cap,
        Capture(c, "eth0", "udp port 41641") as wg_cap,
    ):
        net.hs.restart()
        cl.wait(lambda s: s["InMapPoll"] and s["StreamsStarted"] >= 2, "reconnect to headscale", timeout=90)
        eventually(
            lambda: f"{OURS_LAN}:" in net.ctl.run(["ss", "-tnH", "state", "established", "( sport = :8080 )"]).stdout,
            "our connection seen",
            30,
        )
        assert udp_ask(c, INET, 7).startswith(f"{WAN_IP}:")  # internet traffic meanwhile rides the tunnel
    assert lan_cap.between(f"{OURS_LAN}.", f"{CTL_IP}.8080:") and lan_cap.between(f"{CTL_IP}.8080", f"{OURS_LAN}.")
    assert tun_cap.packets == [], tun_cap.packets[:5]
    assert exit_cap.packets == [], exit_cap.packets[:5]
    assert wg_cap.between(f"{OURS_LAN}.41641", f"{TS_LAN}."), wg_cap.packets[:5]  # WireGuard itself: direct on the LAN
    _our_sockets_bypass(net, helper_pid(cl), derp=True)
    assert eventually(
        lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled after restart", 60, 1.0, d
    )

    # SIGKILL: rules stay behind; a restart without the exit node removes them: routing as before
    assert cl.stop(signal.SIGKILL) == -9
    assert "lookup 52" in c.run(["ip", "rule"]).stdout
    cl.restart()
    cl.wait_synced(1, timeout=60)
    assert routing_dump(c, skip_dev="mesh0") == before  # the baseline was taken before mesh0 existed
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    assert cl.stop() == 0
    assert routing_dump(c) == before


def test_tailscaled_exit_node_set_and_clear_at_run_time(lab):
    net, key, t, ts_ip, ts_ip6 = _setup(lab)
    c = net.ours
    before = routing_dump(c)
    cl = DrivenNode(c, net.hs.url, auth_key=key).start()
    cl.wait_synced(1, timeout=60)
    _ts_exit_offered(cl, ts_ip)
    no_exit = routing_dump(c)
    assert "lookup 52" not in c.run(["ip", "rule"]).stdout
    d = diag(node=cl, t=t)
    # plain tailnet traffic first (DERP, then direct), without any exit node
    eventually(lambda: c.ping(ts_ip, count=1, timeout=2).returncode == 0, "ping tailscaled", 90, 1.0, d)

    prefs = cl.call("set_exit_node", TS_NAME)  # by name this time (resolved to its ID, as meshctl does)
    assert prefs["exit_node"] == cl.ipn_peer(TS_NAME).id
    ts_id = cl.wait(lambda s: s.get("ExitNodeID") is not None, "exit node resolved")["ExitNodeID"]
    assert cl.peer(TS_NAME)["ID"] == ts_id
    assert eventually(lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled", 60, 1.0, d)
    assert tcp_ask(c, INET, 8080, timeout=10).startswith(f"{WAN_IP}:")
    assert udp_ask(c, INET6, 7).startswith(f"{WAN_IP6}:")
    _our_sockets_bypass(net, helper_pid(cl), derp=True)

    cl.call("set_exit_node", None)  # clearing restores routing exactly
    cl.wait(lambda s: s.get("ExitNodeID") is None, "exit node cleared")
    assert routing_dump(c) == no_exit
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    assert c.ping(ts_ip, count=2).returncode == 0  # tailscaled is an ordinary peer again

    cl.call("set_exit_node", ts_ip)  # by IP; then SIGKILL and a restart that re-installs it
    assert eventually(lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled again", 60, 1.0, d)
    assert cl.stop(signal.SIGKILL) == -9
    cl2 = Node(c, net.hs.url, args=("--exit-node", ts_ip)).start()
    cl2.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node after restart", 60)
    assert "cleaned up after a previous run" in cl2.log() or "removed exit routing leftovers" in cl2.log()
    rules = c.run(["ip", "rule"]).stdout
    assert rules.count("lookup 52") == 1, rules  # no duplicates from the crashed run
    assert eventually(
        lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"),
        "UDP via tailscaled after restart",
        90,
        1.0,
        diag(node=cl2, t=t),
    )
    assert cl2.stop() == 0
    assert routing_dump(c) == before


def _start_helper(h, lab):
    """`mesh-helper serve` (LocalAPI on a private socket, journals in the lab dir) in host ``h``."""
    sock = lab.dir / f"helper-{h.name}.sock"
    return str(sock), start_serve(h, sock, lab.dir / f"helper-{h.name}-run", tun="mesh0", extra=("-v",))


def test_tailscaled_exit_node_via_localapi(lab):
    """meshctl / tailscale CLI against our LocalAPI pick the tailscaled exit node; clear; SIGKILL + restart."""
    import json

    from tests.helper.conftest import meshctl, tailscale_cli

    net, key, t, ts_ip, ts_ip6 = _setup(lab)
    c = net.ours
    before = routing_dump(c)
    sock, proc = _start_helper(c, lab)
    p = meshctl(
        sock,
        "up",
        "--login-server",
        net.hs.url,
        "--auth-key",
        key_file_arg(key, lab.dir),
        "--hostname",
        OURS_NAME,
        "--timeout",
        "60",
        timeout=90,
    )
    assert p.returncode == 0, p.stdout + p.stderr + c.log_of(proc)[-3000:]

    def status() -> dict:
        r = tailscale_cli(sock, "status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def ts_in_status():
        return next((v for v in (status().get("Peer") or {}).values() if v["HostName"] == TS_NAME), None)

    def helper_diag() -> str:
        return f"helper log:\n{c.log_of(proc)[-4000:]}\n" + diag(t=t)()

    eventually(
        lambda: (p := ts_in_status()) and p.get("ExitNodeOption"),
        f"{TS_NAME} as exit-node option",
        60,
        1.0,
        helper_diag,
    )
    assert TS_NAME in meshctl(sock, "exit-node", "list").stdout
    eventually(lambda: c.ping(ts_ip, count=1, timeout=2).returncode == 0, "ping tailscaled", 90, 1.0, helper_diag)
    no_exit = routing_dump(c)

    p = meshctl(sock, "up", "--exit-node", TS_NAME, "--timeout", "60", timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert ts_in_status()["ExitNode"]
    assert eventually(
        lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled (LocalAPI)", 60, 1.0, helper_diag
    )
    assert tcp_ask(c, INET, 8080, timeout=10).startswith(f"{WAN_IP}:")
    _our_sockets_bypass(net, proc.pid, derp=True)  # Host.popen execs: proc.pid is the helper itself

    # tailscale set --exit-node= (our LocalAPI) clears it: routing exactly as without an exit node
    p = tailscale_cli(sock, "set", "--exit-node=")
    assert p.returncode == 0, p.stdout + p.stderr
    eventually(lambda: routing_dump(c) == no_exit, "routing restored after clearing", 20)
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    # ... and --exit-node=<IP> sets it again
    p = tailscale_cli(sock, "set", f"--exit-node={ts_ip}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert eventually(
        lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled (tailscale set)", 60, 1.0, helper_diag
    )

    # SIGKILL of the helper: its rules stay; the next helper removes them at start: routing as before
    proc.kill()
    proc.wait(timeout=10)
    assert "lookup 52" in c.run(["ip", "rule"]).stdout
    sock, proc = _start_helper(c, lab)
    assert routing_dump(c) == before
    assert udp_ask(c, INET, 7, tries=1).startswith("error")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert routing_dump(c) == before


def test_tailscaled_exit_node_approved_late_then_revoked(lab):
    """Chosen before headscale approves its routes: blocked (fail closed), used once approved, blocked when revoked."""
    net = build(lab, exit_side="ts")
    key = net.hs.preauth_key("alice")
    t = start_tailscaled(net, key, "--advertise-exit-node", forwarding=True)
    ts_ip = t.ip()
    c = net.ours
    cl = Node(c, net.hs.url, auth_key=key, args=("--exit-node", ts_ip)).start()
    cl.wait_synced(1, timeout=60)
    d = diag(node=cl, t=t)
    eventually(lambda: "does not offer an exit node" in cl.log(), "warning: not an exit node yet", 30)
    assert not cl.peer(TS_NAME)["ExitNodeOption"]
    assert udp_ask(c, INET, 7, tries=2) == "timeout"  # blackholed in table 52, not leaked
    assert "default dev mesh0" in c.run(["ip", "route", "show", "table", "52"]).stdout

    nid = approve_exit(net.hs, TS_NAME)
    cl.wait(
        lambda s: (
            (p := next((p for p in s["Peers"] if p["Name"].startswith(TS_NAME + ".")), None)) and p["ExitNodeOption"]
        ),
        "approved exit routes in our netmap",
        60,
    )
    assert eventually(
        lambda: udp_ask(c, INET, 7).startswith(f"{WAN_IP}:"), "UDP via tailscaled once approved", 90, 1.0, d
    )

    net.hs.cli("nodes", "approve-routes", "-i", str(nid), "-r", "", json_out=False)  # revoke
    cl.wait(lambda s: not any(p["ExitNodeOption"] for p in s["Peers"]), "exit routes revoked", 60)
    assert eventually(lambda: udp_ask(c, INET, 7, tries=2) == "timeout", "blocked after revocation", 30, 1.0, d)
    assert "lookup 52" in c.run(["ip", "rule"]).stdout  # still fail-closed, the pref stays
    assert c.ping(ts_ip, count=1, timeout=3).returncode == 0  # an ordinary peer now
    assert cl.stop() == 0
