"""Self-tests of the lab harness: links, NAT kinds, teardown and a wireguard-go pair."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.netlab import REPO_ROOT, Lab, LabError, list_namespaces, sweep_stale
from tests.lab.peers import WireguardGo, peer_bin

pytestmark = pytest.mark.lab

ECHO = str(Path(__file__).with_name("udp_echo.py"))

# Sends one datagram from a fixed local port to each "ip:port" argument and prints each reply.
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(1)
for dst in sys.argv[2:]:
    ip, port = dst.rsplit(":", 1)
    for _ in range(3):
        s.sendto(b"x", (ip, int(port)))
        try:
            print(s.recvfrom(100)[0].decode())
            break
        except socket.timeout:
            continue
    else:
        print("timeout")
"""


def test_link_ping_v4_v6(lab):
    a, b = lab.host("a"), lab.host("b")
    ia, ib = lab.link(a, b, "192.0.2.1/24", "192.0.2.2/24", a_addr6="2001:db8::1/64", b_addr6="2001:db8::2/64")
    assert (ia, ib) == ("eth0", "eth0")
    assert a.addr == "192.0.2.1" and b.addr6 == "2001:db8::2"
    assert a.ping("192.0.2.2").returncode == 0
    assert b.ping("2001:db8::1").returncode == 0
    assert len(a.ns) <= 15 and a.ns.startswith(lab.prefix)


def test_switch_three_hosts(lab):
    sw = lab.switch("lan")
    hosts = [lab.host(n) for n in ("hs", "n1", "n2")]
    for i, h in enumerate(hosts):
        sw.attach(h, f"192.0.2.{10 + i}/24")
    assert hosts[1].ping("192.0.2.12").returncode == 0
    assert hosts[2].ping("192.0.2.10").returncode == 0


def _internet_with_echo(lab):
    inet = lab.switch("inet")
    s1, s2 = lab.host("stun1"), lab.host("stun2")
    inet.attach(s1, "203.0.113.1/24")
    inet.attach(s2, "203.0.113.3/24")
    for s in (s1, s2):
        p = s.popen_python(ECHO, "0.0.0.0", "3478")
        s.wait_for(["sh", "-c", f"grep -q ready {p.log_path}"])
    return inet


def _mapped(client, *dsts, sport=40000):
    out = client.exec_python(CLIENT, str(sport), *dsts).stdout.split()
    return out


@pytest.mark.parametrize("kind", ["easy", "hard"])
def test_nat_mapping(lab, kind):
    inet = _internet_with_echo(lab)
    r = lab.nat_router("rtr", kind, inet, "203.0.113.2/24", "10.0.1.0/24")
    c = lab.host("c")
    assert r.add_host(c) == "10.0.1.2"
    m1, m2 = _mapped(c, "203.0.113.1:3478", "203.0.113.3:3478")
    ip1, port1 = m1.split(":")
    ip2, port2 = m2.split(":")
    assert ip1 == ip2 == "203.0.113.2"
    if kind == "easy":
        assert port1 == port2 == "40000"  # endpoint-independent, port preserved
    else:
        assert port1 != port2  # endpoint-dependent: a new random port per destination
    r.flush_conntrack()
    r.change_wan_address("203.0.113.22/24")
    (m3,) = _mapped(c, "203.0.113.1:3478")
    assert m3.startswith("203.0.113.22:")


def test_nat_none_routes_only(lab):
    inet = lab.host("inet")
    p = inet.popen_python(ECHO, "0.0.0.0", "3478")
    r = lab.nat_router("rtr", "none", inet, "198.51.100.2/24", "10.0.2.0/24")
    inet.wait_for(["sh", "-c", f"grep -q ready {p.log_path}"])
    c = lab.host("c")
    r.add_host(c)
    assert _mapped(c, "198.51.100.1:3478") == ["10.0.2.2:40000"]


def test_udp_blocked(lab):
    inet = _internet_with_echo(lab)
    r = lab.nat_router("rtr", "udp-blocked", inet, "203.0.113.2/24", "10.0.1.0/24")
    c = lab.host("c")
    r.add_host(c)
    assert _mapped(c, "203.0.113.1:3478") == ["timeout"]
    assert c.ping("203.0.113.1").returncode == 0  # ICMP still passes
    r.block_udp(False)
    assert _mapped(c, "203.0.113.1:3478")[0].startswith("203.0.113.2:")


def test_teardown_removes_namespaces_and_processes():
    with Lab() as lab:
        a = lab.host("a")
        proc = a.popen(["sleep", "300"])
        stray = a.popen(["sh", "-c", "sleep 300 & sleep 300"])
        names = [h.ns for h in lab.hosts.values()]
        assert all(n in list_namespaces() for n in names)
    assert not any(n in list_namespaces() for n in names)
    assert proc.poll() is not None and stray.poll() is not None


def test_teardown_on_exception():
    names = []
    with pytest.raises(RuntimeError):
        with Lab() as lab:
            names.append(lab.host("a").ns)
            raise RuntimeError("boom")
    assert names[0] not in list_namespaces()


def test_teardown_on_sigterm_and_stale_sweep(tmp_path):
    script = (
        "import sys, time\n"
        "from tests.lab.netlab import Lab\n"
        "with Lab() as lab:\n"
        "    h = lab.host('a')\n"
        "    h.popen(['sleep', '300'])\n"
        "    print(h.ns, flush=True)\n"
        "    time.sleep(300)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # SIGTERM: the handler turns it into KeyboardInterrupt and the lab tears down.
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    ns = p.stdout.readline().strip()
    assert ns in list_namespaces()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=20)
    assert ns not in list_namespaces()
    # SIGKILL: nothing runs; the next sweep removes the orphan.
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    ns = p.stdout.readline().strip()
    p.kill()
    p.wait(timeout=10)
    # (another run's Lab() may sweep it first: both outcomes leave it gone)
    sweep_stale()
    assert ns not in list_namespaces()


def test_run_failure_message(lab):
    a = lab.host("a")
    with pytest.raises(LabError, match=r"\[a\] sh -c 'echo oops >&2; exit 3' -> rc=3"):
        a.run("echo oops >&2; exit 3")


def test_wireguard_go_pair_ping(lab):
    peer_bin("wireguard-go")
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, b, "192.0.2.1/24", "192.0.2.2/24")
    wa = WireguardGo(a, lab.ifname(), listen_port=51820, address="10.9.0.1/24").start()
    wb = WireguardGo(b, lab.ifname(), listen_port=51820, address="10.9.0.2/24").start()
    wa.add_peer(wb.public_key, endpoint="192.0.2.2:51820", allowed_ips="10.9.0.2/32")
    wb.add_peer(wa.public_key, endpoint="192.0.2.1:51820", allowed_ips="10.9.0.1/32")
    assert a.ping("10.9.0.2", count=3).returncode == 0
    assert b.ping("10.9.0.1").returncode == 0
    assert wa.wg.latest_handshake(wb.public_key) > 0
    rx, tx = wb.wg.transfer(wa.public_key)
    assert rx > 0 and tx > 0
