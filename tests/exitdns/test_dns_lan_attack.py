"""Attacks on MagicDNS and tailnet-only listeners from the LAN, in lab namespaces (run_guarded_dns.py = the helper).

nb 192.0.2.2 (LAN neighbour: routes 100.100.100.100 and 100.64.0.0/10 via us; has 100.64.0.9 on lo)
    | 192.0.2.0/24
me 192.0.2.1   tun0 100.64.0.1 + quad-100   <- tun_pipe UDP 198.51.100.1:7000 (stand-in for WireGuard)
    | 198.51.100.0/24
peer 100.64.0.2 on its tun0, reaching us through the tunnel
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from engine.recovery.journal import Journal
from tests.lab.netlab import Host

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
ALLOW_ALL = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]
SELF = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]}
PEERS = [{"Name": "peer.tail.example.", "Addresses": ["100.64.0.2/32"]}]
DNS = {"Proxied": True, "Domains": ["tail.example"]}

LISTEN = (  # a UDP service on the LAN address: prints the source of every datagram it gets
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 4444))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    d, a = s.recvfrom(100)\n"
    "    print('got', a[0], flush=True)\n"
)
SEND_FROM = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1], 0))\n"
    "for _ in range(3):\n"
    "    s.sendto(b'x', (sys.argv[2], 4444))\n"
)
# N TCP connections from one source address, held open; then one query on each: how many answer
FLOOD = (
    "import socket, struct, sys, time\n"
    "src, n = sys.argv[1], int(sys.argv[2])\n"
    "q = bytes.fromhex('abcd01000001000000000000') + b'\\x04peer\\x04tail\\x07example\\x00' + b'\\x00\\x01\\x00\\x01'\n"
    "conns = []\n"
    "for _ in range(n):\n"
    "    c = socket.socket(); c.settimeout(3); c.bind((src, 0)); c.connect(('100.100.100.100', 53)); conns.append(c)\n"
    "time.sleep(0.5)\n"
    "ok = 0\n"
    "for c in conns:\n"
    "    try:\n"
    "        c.sendall(struct.pack('!H', len(q)) + q)\n"
    "        if len(c.recv(2)) == 2: ok += 1\n"
    "    except OSError:\n"
    "        pass\n"
    "print(ok, flush=True)\n"
    "if len(sys.argv) > 3: time.sleep(float(sys.argv[3]))\n"
)


def _counters(host, proc) -> dict:
    lines = [ln for ln in host.log_of(proc).splitlines() if ln.startswith("counters ")]
    return json.loads(lines[-1].split(" ", 1)[1]) if lines else {}


def dig(h, *args: str) -> str:
    return h.run(["dig", "+time=1", "+tries=1", *args], check=False).stdout


@pytest.fixture
def net(lab, tmp_path):
    me, nb, peer = lab.host("me"), lab.host("nb"), lab.host("peer")
    lab.link(me, nb, "192.0.2.1/24", "192.0.2.2/24")
    lab.link(me, peer, "198.51.100.1/24", "198.51.100.2/24")
    nb.add_route("100.100.100.100/32", via="192.0.2.1")
    nb.add_route("100.64.0.0/10", via="192.0.2.1")
    nb.run(["ip", "addr", "add", "100.64.0.9/32", "dev", "lo"])
    mp = me.popen_python(
        str(HERE / "tun_pipe.py"),
        "tun0",
        "198.51.100.1:7000",
        "198.51.100.2:7000",
        "0",
        json.dumps({"rules": ALLOW_ALL, "local": ["100.64.0.1/32", "100.100.100.100/32"]}),
    )
    pp = peer.popen_python(
        str(HERE / "tun_pipe.py"),
        "tun0",
        "198.51.100.2:7000",
        "198.51.100.1:7000",
        "0",
        json.dumps({"rules": ALLOW_ALL, "local": ["100.64.0.2/32"]}),
    )
    Host.wait_log(mp, "ready")
    Host.wait_log(pp, "ready")
    peer.run(["ip", "addr", "add", "100.64.0.2/32", "dev", "tun0"])
    peer.run(["ip", "link", "set", "tun0", "up"])
    peer.run(["ip", "route", "add", "100.64.0.1/32", "dev", "tun0"])
    peer.run(["ip", "route", "add", "100.100.100.100/32", "dev", "tun0"])
    listener = me.popen_python(LISTEN)
    Host.wait_log(listener, "ready")
    return me, nb, peer, listener, tmp_path / "run"


def _start(me, run_dir, firewall: bool = True):
    spec = {
        "tun": "tun0",
        "run_dir": str(run_dir),
        "firewall": firewall,
        "local": ["100.64.0.1/32"],
        "routes": ["100.64.0.2/32"],
        "self": SELF,
        "peers": PEERS,
        "dns": DNS,
    }
    p = me.popen_python(str(HERE / "run_guarded_dns.py"), json.dumps(spec))
    Host.wait_log(p, "ready")
    return p


def _table(me) -> str:
    return me.run(["nft", "list", "ruleset"]).stdout


def test_dns_server_refuses_queries_from_the_lan_without_firewall(net) -> None:
    """Second line alone (no nft rules): the server drops and counts queries that arrive on the LAN."""
    me, nb, peer, listener, run_dir = net
    srv = _start(me, run_dir, firewall=False)
    assert "meshvpn" not in _table(me)
    # the attack reaches the host: a CGNAT-sourced datagram from the neighbour is delivered without the firewall
    nb.exec_python(SEND_FROM, "100.64.0.9", "192.0.2.1")
    Host.wait_log(listener, "got 100.64.0.9", timeout=5)
    assert "timed out" in dig(nb, "@100.100.100.100", "peer.tail.example")
    assert "ANSWER SECTION" not in dig(nb, "@100.100.100.100", "+tcp", "peer.tail.example")
    time.sleep(0.5)
    assert _counters(me, srv)["drops"].get("wrong-interface", 0) >= 2, me.log_of(srv)
    # this host (lo) and the tunnel are still answered
    assert dig(me, "@100.100.100.100", "peer.tail.example", "+short").split() == ["100.64.0.2"]
    assert dig(me, "@100.100.100.100", "+tcp", "peer.tail.example", "+short").split() == ["100.64.0.2"]
    assert dig(peer, "@100.100.100.100", "me.tail.example", "+short").split() == ["100.64.0.1"]
    srv.send_signal(signal.SIGTERM)
    srv.wait(10)


def test_lan_neighbour_gets_nothing_and_nothing_is_left(net) -> None:
    me, nb, peer, listener, run_dir = net
    before = _table(me)
    srv = _start(me, run_dir)
    table = _table(me)
    assert "table inet meshvpn" in table and "chain input" in table
    # the neighbour: quad-100 over UDP and TCP, and CGNAT-sourced packets to our LAN address
    assert "timed out" in dig(nb, "@100.100.100.100", "peer.tail.example")
    assert "ANSWER SECTION" not in dig(nb, "@100.100.100.100", "+tcp", "peer.tail.example")
    nb.exec_python(SEND_FROM, "100.64.0.9", "192.0.2.1")
    ping = ["ping", "-c", "1", "-W", "2", "-I", "100.64.0.9", "100.64.0.1"]
    assert nb.run(ping, check=False).returncode != 0  # CGNAT-sourced, to our tailnet address
    time.sleep(1.0)
    assert "got 100.64.0.9" not in me.log_of(listener)
    drops = [int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", _table(me))]
    assert sum(drops) >= 5, _table(me)
    assert "wrong-interface" not in me.log_of(srv)  # stopped by nft before the server saw it
    # a non-CGNAT source from the LAN still reaches LAN services
    nb.exec_python(SEND_FROM, "192.0.2.2", "192.0.2.1")
    Host.wait_log(listener, "got 192.0.2.2", timeout=5)
    # the tunnel path and the host itself still work
    assert dig(peer, "@100.100.100.100", "me.tail.example", "+short").split() == ["100.64.0.1"]
    assert dig(peer, "@100.100.100.100", "+tcp", "me.tail.example", "+short").split() == ["100.64.0.1"]
    assert peer.ping("100.64.0.1", count=1, timeout=3).returncode == 0
    assert dig(me, "@100.100.100.100", "peer.tail.example", "+short").split() == ["100.64.0.2"]
    assert dig(me, "@fd7a:115c:a1e0::53", "+tcp", "peer.tail.example", "+short").split() == ["100.64.0.2"]
    me.exec_python(SEND_FROM, "100.64.0.1", "100.64.0.1")  # our own tailnet address over lo
    Host.wait_log(listener, "got 100.64.0.1", timeout=5)

    # clean stop: no table, no journal
    srv.send_signal(signal.SIGTERM)
    srv.wait(10)
    assert _table(me) == before
    assert Journal(run_dir / "changes.jsonl").pending() == []

    # SIGKILL leaves the table; the next start removes it (journal) and a stop leaves nothing
    srv = _start(me, run_dir)
    srv.send_signal(signal.SIGKILL)
    srv.wait(10)
    assert "table inet meshvpn" in _table(me) and Journal(run_dir / "changes.jsonl").pending()
    srv = _start(me, run_dir)
    assert "nft table inet meshvpn" in me.log_of(srv).split("leftovers", 1)[1].splitlines()[0]
    assert _table(me).count("table inet meshvpn") == 1
    assert "timed out" in dig(nb, "@100.100.100.100", "peer.tail.example")
    srv.send_signal(signal.SIGTERM)
    srv.wait(10)
    assert _table(me) == before
    assert Journal(run_dir / "changes.jsonl").pending() == []


def test_tcp_flood_hits_the_per_source_cap(net) -> None:
    me, nb, peer, listener, run_dir = net
    srv = _start(me, run_dir)
    flood = me.popen_python(FLOOD, "127.0.0.2", "40", "5")  # holds its connections open for 5 s more
    deadline = time.monotonic() + 20
    while not me.log_of(flood).strip():
        assert time.monotonic() < deadline and flood.poll() is None, me.log_of(flood)
        time.sleep(0.1)
    assert me.log_of(flood).strip() == "8"  # MAX_TCP_CONNS_PER_SOURCE answered, the rest closed at once
    # while the flood holds its 8 slots: another source is answered
    assert dig(me, "-b", "127.0.0.3", "@100.100.100.100", "+tcp", "peer.tail.example", "+short").split() == [
        "100.64.0.2"
    ]
    assert dig(peer, "@100.100.100.100", "+tcp", "me.tail.example", "+short").split() == ["100.64.0.1"]
    time.sleep(0.5)
    assert _counters(me, srv)["drops"].get("tcp-conn-limit-source", 0) >= 32, me.log_of(srv)
    # the total cap: 9 sources x 8 = 72 > 64
    outs = [me.popen_python(FLOOD, f"127.0.1.{i}", "8", "3") for i in range(1, 10)]
    for p in outs:
        p.wait(30)
    answered = sum(int(me.log_of(p).strip() or 0) for p in outs)
    assert answered <= 64 - 8 and answered >= 40, answered  # the first flood still holds 8 slots
    time.sleep(0.5)
    assert _counters(me, srv)["drops"].get("tcp-conn-limit-total", 0) >= 72 - 56, me.log_of(srv)
    flood.wait(30)
    # once the floods are gone, the flooding source is served again
    assert dig(me, "-b", "127.0.0.2", "@100.100.100.100", "+tcp", "peer.tail.example", "+short").split() == [
        "100.64.0.2"
    ]
    srv.send_signal(signal.SIGTERM)
    srv.wait(10)
