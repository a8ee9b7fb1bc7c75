"""A whole exit-node path with our pieces: ExitRouter + filter on the client, filter + Forwarder (nft) on the exit.

    inet 203.0.113.2 (udp echo)
        | 203.0.113.0/24
    exit: tun0 100.64.0.1  <- tun_pipe (UDP 192.0.2.1:7000, filter local 0/0) ; Forwarder(tun0): masquerade
        | 192.0.2.0/24 underlay
    client: tun0 100.64.0.2 <- tun_pipe (UDP marked 0x80000, filter AllowNone-ish) ; ExitRouter(tun0)

tun_pipe stands in for WireGuard (plain UDP): the point is routing, marking, filtering and NAT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.router.exitnode import ExitRouteConfig, ExitRouter, netns_runner
from engine.router.nft import ForwardConfig, Forwarder
from tests.lab.netlab import REPO_ROOT, Host

HERE = Path(__file__).resolve().parent
ECHO = str(REPO_ROOT / "tests" / "lab" / "udp_echo.py")
ALLOW_ALL = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]

ASK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(1.0)\n"
    "for _ in range(5):\n"
    "    try:\n"
    "        s.sendto(b'hi', (sys.argv[1], 3478))\n"
    "        print(s.recvfrom(100)[0].decode()); break\n"
    "    except socket.timeout:\n"
    "        pass\n"
    "    except OSError as e:\n"
    "        print('unreachable', e.errno); break\n"
    "else:\n"
    "    print('timeout')\n"
)


@pytest.mark.lab
@pytest.mark.parametrize("mark", [True, False], ids=["marked_underlay", "unmarked_underlay_loops"])
def test_exit_path_end_to_end(lab, tmp_path, mark) -> None:
    c, ex, inet = lab.host("c"), lab.host("exit"), lab.host("inet")
    lab.link(c, ex, "192.0.2.2/24", "192.0.2.1/24")
    lab.link(ex, inet, "203.0.113.1/24", "203.0.113.2/24")
    inet.popen_python(ECHO, "0.0.0.0", "3478")
    # the exit: pipe + TUN, route back to the client's tailnet address, forwarding + masquerade
    xp = ex.popen_python(
        str(HERE / "tun_pipe.py"),
        "tun0",
        "192.0.2.1:7000",
        "192.0.2.2:7000",
        "1",
        json.dumps({"rules": ALLOW_ALL, "local": ["100.64.0.1/32", "0.0.0.0/0"]}),
    )
    Host.wait_log(xp, "ready")
    ex.run(["ip", "addr", "add", "100.64.0.1/32", "dev", "tun0"])
    ex.run(["ip", "link", "set", "tun0", "up"])
    ex.run(["ip", "route", "add", "100.64.0.2/32", "dev", "tun0"])
    fw = Forwarder(netns_runner(ex.ns), journal_dir=tmp_path / "ex")
    fw.set(ForwardConfig("tun0"))
    # the client: pipe (inbound rules block everything: replies must come through the UDP LRU)
    cp = c.popen_python(
        str(HERE / "tun_pipe.py"),
        "tun0",
        "192.0.2.2:7000",
        "192.0.2.1:7000",
        "1" if mark else "0",
        json.dumps({"rules": [], "local": ["100.64.0.2/32"]}),
    )
    Host.wait_log(cp, "ready")
    c.run(["ip", "addr", "add", "100.64.0.2/32", "dev", "tun0"])
    c.run(["ip", "link", "set", "tun0", "up"])
    inet.wait_for(["sh", "-c", "ss -lun | grep -q 3478"])

    assert c.exec_python(ASK, "203.0.113.2").stdout.strip() == "unreachable 101"  # no route without the exit node
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path / "c")
    r.set(ExitRouteConfig("tun0", ipv6=False))
    try:
        seen = c.exec_python(ASK, "203.0.113.2").stdout.strip()
        if mark:
            assert seen.startswith("203.0.113.1:"), (seen, c.log_of(cp), ex.log_of(xp))
            assert "no-rules-matched" not in c.log_of(cp)  # the reply passed via the UDP flow LRU
            # an unsolicited packet from the exit side into the client's tunnel is dropped by its filter
            ex.exec_python(
                "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.sendto(b'x', ('100.64.0.2', 9999))"
            )
            Host.wait_log(cp, '"no-rules-matched": 1', timeout=5)
        else:
            # the pipe's own UDP would be routed into table 52 (the TUN) itself: nothing gets through
            assert seen == "timeout"
    finally:
        r.set(None)
        fw.set(None)
