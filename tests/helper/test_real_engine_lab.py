"""Lab: `mesh-helper serve` with the real engine joins Headscale; tailscale CLI + meshctl drive it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.control.nodes import headscale_lan, start_serve
from tests.helper.conftest import TAILSCALE, meshctl, tailscale_cli
from tests.helper.keyfile import key_file_arg
from tests.lab.headscale import auth_id_from_url
from tests.lab.netlab import poll_until
from tests.lab.tailscaled import Tailscaled
from tests.node.labnode import INET, UDP_ECHO, udp_ask

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not TAILSCALE.exists(), reason="reference peers not built")]

CTL = "192.0.2.1"
B_WAN = "198.51.100.2"  # the exit node's WAN address (towards isp) in test_exit_node_chosen_through_the_localapi


def wait_until(fn, what: str, timeout: float = 60.0, interval: float = 0.3):
    """netlab.poll_until, failing the test (with the last value seen) when time runs out."""
    seen = [None]

    def probe():
        seen[0] = fn()
        return seen[0]

    got = poll_until(probe, timeout, interval)
    if got is None:
        raise AssertionError(f"timed out waiting for {what}; last={seen[0]!r}")
    return got


def up_with_key(sock: str, url: str, key: str, lab, hostname: str, *flags: str):
    """`meshctl up` with a pre-auth key file, a hostname and ``flags`` (waits up to 60 s for Running)."""
    return meshctl(
        sock,
        "up",
        "--login-server",
        url,
        "--auth-key",
        key_file_arg(key, lab.dir),
        "--hostname",
        hostname,
        *flags,
        "--timeout",
        "60",
        timeout=90,
    )


@pytest.fixture
def net(lab):
    hs, host = headscale_lan(lab)
    return lab, hs, host


def start_helper(h, lab):
    sock = str(lab.dir / f"helper-{h.name}.sock")
    proc = start_serve(h, Path(sock), lab.dir / f"{h.name}-run", tun="mesh0", extra=("-v",))
    return sock, proc


def status(sock: str) -> dict:
    p = tailscale_cli(sock, "status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_auth_key_join_status_down_and_clean_exit(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    t = Tailscaled(host("t", 13)).start()
    t.up(hs.url, key, "go-t")
    a = host("a", 11)
    sock, proc = start_helper(a, lab)

    p = up_with_key(sock, hs.url, key, lab, "py-a")
    assert p.returncode == 0, p.stdout + p.stderr + a.log_of(proc)[-3000:]
    assert key not in a.log_of(proc)

    def sees_go_t():
        st = status(sock)
        peers = {v["HostName"]: v for v in (st.get("Peer") or {}).values()}
        return (st, peers) if st["BackendState"] == "Running" and "go-t" in peers else None

    st, peers = wait_until(sees_go_t, "our helper's status to list go-t")
    hn = {n["name"]: n for n in hs.nodes()}
    assert st["Self"]["PublicKey"] == hn["py-a"]["node_key"]
    assert sorted(st["TailscaleIPs"]) == sorted(hn["py-a"]["ip_addresses"])
    assert sorted(peers["go-t"]["TailscaleIPs"]) == sorted(hn["go-t"]["ip_addresses"])
    assert peers["go-t"]["PublicKey"] == hn["go-t"]["node_key"]
    assert st["User"], st

    out = meshctl(sock, "status")
    assert out.returncode == 0 and "go-t" in out.stdout, out.stdout + out.stderr
    dm = tailscale_cli(sock, "debug", "derp-map")
    assert dm.returncode == 0 and '"999"' in dm.stdout, dm.stdout + dm.stderr  # headscale's embedded region
    assert a.run(["ip", "link", "show", "mesh0"], check=False).returncode == 0

    p = meshctl(sock, "down")
    assert p.returncode == 0, p.stderr
    assert status(sock)["BackendState"] == "Stopped"
    wait_until(lambda: a.run(["ip", "link", "show", "mesh0"], check=False).returncode != 0, "TUN removed on down", 20)

    p = meshctl(sock, "up", "--timeout", "60", timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    wait_until(lambda: status(sock)["BackendState"] == "Running", "running again")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, a.log_of(proc)[-3000:]
    assert a.run(["ip", "link", "show", "mesh0"], check=False).returncode != 0


def test_interactive_login_through_the_cli(net):
    lab, hs, host = net
    hs.create_user("bob")
    a = host("a", 11)
    sock, proc = start_helper(a, lab)
    cli = subprocess.Popen(
        [str(TAILSCALE), f"--socket={sock}", "up", f"--login-server={hs.url}", "--hostname=py-i", "--timeout=90s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = wait_until(
            lambda: re.search(r"https?://\S+/register/\S+", status(sock).get("AuthURL", "") or ""),
            "AuthURL from headscale",
            60,
        ).group(0)
        hs.register(auth_id_from_url(url), "bob")
        out, err = cli.communicate(timeout=90)
        assert cli.returncode == 0, out + err + a.log_of(proc)[-3000:]
        assert "To authenticate, visit:" in err and url in err
    finally:
        if cli.poll() is None:
            cli.kill()
    st = wait_until(lambda: (s := status(sock))["BackendState"] == "Running" and s, "Running after approval")
    assert st["Self"]["HostName"] == "py-i"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_sigkill_with_real_engine_leaves_no_leftovers(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a = host("a", 11)
    rules_before = a.run(["ip", "rule", "show"]).stdout
    routes_before = a.run(["ip", "route", "show", "table", "all"]).stdout
    sock, proc = start_helper(a, lab)
    p = up_with_key(sock, hs.url, key, lab, "py-k")
    assert p.returncode == 0, p.stdout + p.stderr
    assert a.run(["ip", "link", "show", "mesh0"], check=False).returncode == 0
    p = tailscale_cli(sock, "status")
    assert p.returncode == 0 and "py-k" in p.stdout, p.stdout + p.stderr
    proc.kill()
    proc.wait(timeout=10)
    sock, proc = start_helper(a, lab)
    assert a.run(["ip", "link", "show", "mesh0"], check=False).returncode != 0
    assert a.run(["ip", "rule", "show"]).stdout == rules_before
    assert a.run(["ip", "route", "show", "table", "all"]).stdout == routes_before
    # the same node (keys are in memory only in GUI mode): logs in again with the key
    p = up_with_key(sock, hs.url, key, lab, "py-k")
    assert p.returncode == 0, p.stdout + p.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert a.run(["ip", "route", "show", "table", "all"]).stdout == routes_before


def test_two_helpers_ping_each_other_over_wireguard(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a, b = host("a", 11), host("b", 12)
    sa, pa = start_helper(a, lab)
    sb, pb = start_helper(b, lab)
    for sock, name in ((sa, "py-a"), (sb, "py-b")):
        p = up_with_key(sock, hs.url, key, lab, name)
        assert p.returncode == 0, p.stdout + p.stderr
    b_ip = wait_until(
        lambda: next(
            (v["TailscaleIPs"][0] for v in (status(sa).get("Peer") or {}).values() if v["HostName"] == "py-b"), None
        ),
        "py-b in py-a's status",
    )
    tries: list = []

    def ping_ok():
        r = meshctl(sa, "ping", "-c", "1", "py-b")
        tries.append(r.stdout + r.stderr)
        return r if r.returncode == 0 and "via DERP" not in r.stdout else None  # the first may take DERP

    try:
        p = wait_until(ping_ok, "ping py-a -> py-b over WireGuard", 30, 1.0)
    except AssertionError:
        raise AssertionError(f"{tries[-3:]}\n{a.log_of(pa)[-2000:]}") from None
    assert f"pong from py-b ({b_ip}) via 192.0.2.12:" in p.stdout, p.stdout
    # a disco ping (like tailscale's) never touches WireGuard: send real traffic for Rx/handshake
    assert a.run(["ping", "-n", "-c", "1", "-W", "3", b_ip], check=False).returncode == 0
    st = {v["HostName"]: v for v in status(sa)["Peer"].values()}
    assert st["py-b"]["CurAddr"].startswith("192.0.2.12:") and st["py-b"]["RxBytes"] > 0
    assert st["py-b"]["LastHandshake"] != "0001-01-01T00:00:00Z"
    t = tailscale_cli(sa, "ping", "-c", "1", b_ip)
    assert "pong from py-b" in t.stdout, t.stdout + t.stderr
    for proc in (pa, pb):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _exit_routing(h) -> bool:
    """Table 52 holds the default route via the TUN and rule 5270 looks it up (IPv4)."""
    rules = h.run(["ip", "-4", "rule", "show"]).stdout
    table = h.run(["ip", "-4", "route", "show", "table", "52"], check=False).stdout
    return any(r.startswith("5270:") and "lookup 52" in r for r in rules.splitlines()) and "default dev mesh0" in table


def test_exit_node_chosen_through_the_localapi(net):
    """meshctl / tailscale CLI pick our other node as exit node: table 52 + rule 5270, traffic leaves via it.

    ``inet`` (203.0.113.2, udp echo reporting the source it saw) is reachable only through b, one router
    (isp) away: an exit node forwards to the internet, not into its own attached subnets (tailscale's
    "guest Wi-Fi" filter), so inet must not sit on b's WAN link.
    """
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a, b = host("a", 11), host("b", 12)
    isp, inet = lab.host("isp"), lab.host("inet")
    lab.link(b, isp, f"{B_WAN}/24", "198.51.100.1/24")
    lab.link(isp, inet, "203.0.113.1/24", f"{INET}/24")
    isp.sysctl("net.ipv4.ip_forward", 1)
    b.add_route("203.0.113.0/24", via="198.51.100.1")
    inet.set_default_route("203.0.113.1")
    inet.popen_python(UDP_ECHO, "0.0.0.0", "7")
    sa, pa = start_helper(a, lab)
    sb, pb = start_helper(b, lab)
    rules_before = a.run(["ip", "-4", "rule", "show"]).stdout
    assert up_with_key(sb, hs.url, key, lab, "py-b", "--advertise-exit-node").returncode == 0
    assert up_with_key(sa, hs.url, key, lab, "py-a").returncode == 0
    node_b = wait_until(lambda: hs.node_by_hostname("py-b"), "py-b in headscale")
    hs.cli("nodes", "approve-routes", "-i", str(node_b["id"]), "-r", "0.0.0.0/0,::/0", json_out=False)

    def offers():
        peers = {v["HostName"]: v for v in (status(sa).get("Peer") or {}).values()}
        return peers.get("py-b", {}).get("ExitNodeOption") and peers["py-b"]

    b_ip = wait_until(offers, "py-b offered as exit node to py-a", 60, 1.0)["TailscaleIPs"][0]
    assert udp_ask(a, INET, 7, tries=1).startswith("error")  # no way to the "internet" without b
    p = meshctl(sa, "exit-node", "list")
    assert "py-b" in p.stdout, p.stdout + p.stderr

    # meshctl up --exit-node (node running: EditPrefs -> DaemonEngine.reconfigure -> Node.set_prefs)
    p = meshctl(sa, "up", "--exit-node", "py-b", "--timeout", "60", timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    st = status(sa)
    assert [v["HostName"] for v in st["Peer"].values() if v["ExitNode"]] == ["py-b"]
    wait_until(lambda: _exit_routing(a), "table 52 + rule 5270", 20)
    got = wait_until(lambda: (r := udp_ask(a, INET, 7)).startswith(f"{B_WAN}:") and r, "traffic via b", 30, 1.0)
    assert got.startswith(f"{B_WAN}:"), got  # masqueraded to b's WAN address

    # the prefs survive down/up: the exit node goes into the Node at start
    assert meshctl(sa, "down").returncode == 0
    wait_until(lambda: a.run(["ip", "-4", "rule", "show"]).stdout == rules_before, "rules removed on down", 20)
    assert meshctl(sa, "up", "--timeout", "60", timeout=90).returncode == 0
    wait_until(lambda: _exit_routing(a), "table 52 + rule 5270 after up", 30)
    wait_until(lambda: udp_ask(a, INET, 7).startswith(f"{B_WAN}:"), "traffic via b after up", 30, 1.0)

    # tailscale set --exit-node= clears it; --exit-node=<ip> sets it again
    p = tailscale_cli(sa, "set", "--exit-node=")
    assert p.returncode == 0, p.stdout + p.stderr
    wait_until(lambda: a.run(["ip", "-4", "rule", "show"]).stdout == rules_before, "exit rules removed", 20)
    assert udp_ask(a, INET, 7, tries=1).startswith("error")
    p = tailscale_cli(sa, "set", f"--exit-node={b_ip}")
    assert p.returncode == 0, p.stdout + p.stderr
    wait_until(lambda: _exit_routing(a), "table 52 + rule 5270 via tailscale set", 20)
    wait_until(lambda: udp_ask(a, INET, 7).startswith(f"{B_WAN}:"), "traffic via b (tailscale set)", 30, 1.0)
    p = meshctl(sa, "exit-node", "set", "")
    assert p.returncode == 0, p.stderr
    wait_until(lambda: a.run(["ip", "-4", "rule", "show"]).stdout == rules_before, "exit rules removed", 20)
    for proc in (pa, pb):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
