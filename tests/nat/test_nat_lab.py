"""magicsock end to end in network namespaces behind NAT routers, with real derpers."""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.derper import derper_available
from tests.nat.natlab import build, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not derper_available(), reason="derper not built")]

DIRECT_DEADLINE = 30.0  # tailscale's CI bar for a direct path
FALLBACK_DEADLINE = 20.0  # trustUDPAddrDuration (6.5 s) + heartbeat + generous slack


def _direct(x, y):
    return lambda: x.path_to(y).get("path") == "direct" and y.path_to(x).get("path") == "direct"


def _flowing(x, y):
    """Packets from y keep arriving at x."""
    n0 = x.rx_from(y)
    return lambda: x.rx_from(y) > n0 + 3


@pytest.mark.parametrize(
    "kind_a,kind_b,want",
    [
        pytest.param("easy", "easy", "direct", id="easy-easy"),
        pytest.param("none", "hard", "direct", id="public-hard"),
        # Linux masquerade filters by address *and port*: the hard side's fresh random port
        # toward us is never let in, so without birthday probing this pair stays on DERP
        # (tailscale's matrix only gets direct here with address-only filtering, "easyAF").
        pytest.param("easy", "hard", "derp", id="easy-hard"),
        pytest.param("hard", "hard", "derp", id="hard-hard"),
        pytest.param("udp-blocked", "easy", "derp", id="udpblocked-easy"),
    ],
)
def test_nat_matrix_cell(lab, kind_a, kind_b, want):
    s = build(lab, kind_a, kind_b)
    try:
        s.connect()
        if kind_a == "hard" and kind_b == "hard":
            assert s.a.report["MappingVariesByDestIP"] is True
        if kind_a == "easy":
            assert s.a.report["MappingVariesByDestIP"] is False
        s.pump()
        got, _ = wait_for(lambda: s.a.rx_from(s.b) and s.b.rx_from(s.a), 15)
        assert got, (s.a.status(), s.b.status())
        if want == "direct":
            ok, _ = wait_for(_direct(s.a, s.b), DIRECT_DEADLINE)
            assert ok, (s.a.status(), s.b.status())
        else:
            ok, _ = wait_for(_direct(s.a, s.b), 8)
            assert not ok
            assert s.a.path_to(s.b)["path"] == "derp"
        ok, _ = wait_for(_flowing(s.a, s.b), 10)
        assert ok
    finally:
        s.close()


def test_direct_breaks_falls_back_to_derp_and_recovers(lab):
    s = build(lab, "easy", "easy", n_derpers=1)
    try:
        s.connect()
        s.pump()
        ok, _ = wait_for(_direct(s.a, s.b), DIRECT_DEADLINE)
        assert ok, (s.a.status(), s.b.status())
        # break the direct path: drop all forwarded UDP at A's router and forget NAT state
        s.ra.block_udp(True)
        s.ra.flush_conntrack()
        ok, waited = wait_for(lambda: s.a.path_to(s.b)["path"] == "derp", FALLBACK_DEADLINE)
        assert ok, s.a.status()
        # traffic still flows (over DERP / TCP)
        ok, _ = wait_for(_flowing(s.b, s.a), 15)
        assert ok, (s.a.status(), s.b.status())
        # heal: back to direct
        s.ra.block_udp(False)
        ok, _ = wait_for(_direct(s.a, s.b), DIRECT_DEADLINE + 30)
        assert ok, (s.a.status(), s.b.status())
    finally:
        s.close()


def test_derp_restart_reconnects_and_relays(lab):
    s = build(lab, "udp-blocked", "easy", n_derpers=1)
    try:
        s.connect()
        s.pump()
        ok, _ = wait_for(_flowing(s.a, s.b), 15)
        assert ok, (s.a.status(), s.b.status())
        s.derpers[0].restart()
        ok, _ = wait_for(lambda: s.a.status()["derp"]["900"]["connects"] >= 2, 20)
        assert ok, s.a.status()["derp"]
        ok, _ = wait_for(_flowing(s.a, s.b), 20)
        assert ok, (s.a.status(), s.b.status())
        ok, _ = wait_for(_flowing(s.b, s.a), 20)
        assert ok
    finally:
        s.close()


def test_wireguard_over_magicsock_derp_then_direct(lab):
    """Our WireGuard Device on magicsock's Bind: ping through the tunnel on DERP, then direct."""
    s = build(lab, "easy", "easy", n_derpers=1, wg=True)
    try:
        # peers know keys but not endpoints yet: the handshake must go over DERP
        s.a.netcheck()
        s.b.netcheck()
        home = s.derpers[0].region_id
        pa = s.a.peer_json(home)
        pb = s.b.peer_json(home)
        pa["endpoints"], pb["endpoints"] = [], []
        s.a.call("peers", peers=[pb])
        s.b.call("peers", peers=[pa])
        ok, _ = wait_for(lambda: s.a.host.ping("100.64.0.2", count=1, timeout=2).returncode == 0, 20)
        assert ok, (s.a.status(), s.b.status())
        st = s.a.status()
        assert st["peers"][s.b.node]["tx_derp_packets"] > 0
        # keep traffic flowing; CallMeMaybe + pings via DERP upgrade it to direct
        pinger = s.a.host.popen(["ping", "-i", "0.2", "100.64.0.2"])
        ok, _ = wait_for(_direct(s.a, s.b), DIRECT_DEADLINE)
        assert ok, (s.a.status(), s.b.status())
        ok, _ = wait_for(lambda: s.b.host.ping("100.64.0.1", count=1, timeout=2).returncode == 0, 10)
        assert ok
        pinger.terminate()
        wg = s.a.status()["wg"]["peers"][0]
        assert wg["last_handshake"] and wg["rx_bytes"] > 0
    finally:
        s.close()


def test_wireguard_tcp_over_derp_when_udp_blocked(lab):
    """TCP through our tunnel when only DERP works; the tunnel's own addresses never become a
    'direct path' (that would loop WireGuard into itself)."""
    s = build(lab, "udp-blocked", "none", n_derpers=1, wg=True)
    try:
        s.connect()
        ok, _ = wait_for(lambda: s.a.host.ping("100.64.0.2", count=1, timeout=2).returncode == 0, 20)
        assert ok, (s.a.status(), s.b.status())
        s.b.host.popen(["iperf3", "-s", "-1", "-B", "100.64.0.2"])
        time.sleep(0.5)
        r = s.a.host.run(["iperf3", "-c", "100.64.0.2", "-t", "2", "-J"], check=False, timeout=40)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert json.loads(r.stdout)["end"]["sum_received"]["bytes"] > 1_000_000
        for x, y in ((s.a, s.b), (s.b, s.a)):
            st = x.path_to(y)
            assert st["path"] == "derp", st
            assert not [c for c in st["candidates"] if c.startswith("100.")], st
    finally:
        s.close()
