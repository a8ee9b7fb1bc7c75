"""Our real node's paths (mesh-helper serve + meshctl up, magicsock): CLI, DERP fallback, rebinding, DERP restart.

One lab for the module (tests/natmatrix/topology.py): headscale with its embedded DERP+STUN on an
'internet' switch, two of our nodes behind "easy" NAT routers (a direct path is possible). The
tests run in file order and share the nodes; each leaves the network as it found it.
Deadlines are protocol-level and generous (trust in a direct path lapses 6.5 s after its last
pong; a lost path is re-probed every 5 s; the re-STUN interval is 23 s while active).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.lab import xfer
from tests.lab.netlab import REPO_ROOT, Lab, poll_until
from tests.lab.peers import peer_bin
from tests.natmatrix.nodes import OurNode
from tests.natmatrix.topology import MatrixTopology

pytestmark = pytest.mark.lab

FALLBACK_DEADLINE = 15.0  # s from a UDP block to "via DERP" (trust 6.5 s + a poll)
DIRECT_DEADLINE = 30.0  # s from the block lifting to direct again (5 s probe rounds + CallMeMaybe)
ARTIFACTS = REPO_ROOT / "test-artifacts" / "nodepath"


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    lab = Lab(keep_logs=True)
    try:
        with lab:
            topo = MatrixTopology.build(lab)
            topo.add_site("aeasy", "easy")
            topo.add_site("beasy", "easy")
            topo.start_nodes({"aeasy": OurNode, "beasy": OurNode})
            try:
                yield topo
            finally:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                for site in topo.sites.values():
                    if site.node is not None:
                        (ARTIFACTS / f"{site.label}.log").write_text(site.node.log())
    finally:
        shutil.rmtree(lab.dir, ignore_errors=True)


def _nodes(topo: MatrixTopology) -> tuple[OurNode, OurNode]:
    return topo.sites["aeasy"].node, topo.sites["beasy"].node  # type: ignore[return-value]


def meshctl(node: OurNode, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.meshctl", "--socket", str(node.socket_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/tmp",
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def wait_path(a: OurNode, b: OurNode, kind: str, timeout: float, both: bool = True) -> float:
    """Seconds until a->b (and b->a if `both`) report path `kind`; AssertionError with the last state."""
    t0 = time.monotonic()
    last: list = [None]

    def there() -> bool:
        try:
            last[0] = (a.path_to(b), b.path_to(a))
        except (OSError, ValueError) as e:
            last[0] = e
            return False
        return last[0][0].kind == kind and (not both or last[0][1].kind == kind)

    assert poll_until(there, timeout, 0.25), f"path not {kind} within {timeout}s: {last[0]}"
    return time.monotonic() - t0


class Pinger:
    """A background kernel ping (5/s, timestamped) from one lab host; reports replies and gaps."""

    LINE = re.compile(r"^\[(\d+\.\d+)\] (\d+) bytes from .*icmp_seq=(\d+)")

    def __init__(self, node: OurNode, ip: str, name: str) -> None:
        self.log = node.host.lab.dir / f"pinger-{name}.log"
        self._out = open(self.log, "wb")
        self.proc = node.host.popen(
            ["ping", "-n", "-D", "-O", "-i", "0.2", "-W", "1", ip], stdout=self._out, stderr=subprocess.STDOUT
        )

    def replies(self) -> list[float]:
        return [float(m.group(1)) for m in map(self.LINE.match, self.log.read_text(errors="replace").splitlines()) if m]

    def replies_since(self, t: float) -> int:
        return sum(1 for r in self.replies() if r >= t)

    def wait_reply_after(self, t: float, timeout: float) -> float:
        """Seconds from `t` (time.time()) to the first echo reply after it."""
        got = poll_until(lambda: [r for r in self.replies() if r >= t], timeout, 0.2)
        assert got, f"no echo reply within {timeout}s"
        return got[0] - t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self._out.close()


# The first test runs before any traffic: the first disco ping can only come back via DERP.
def test_meshctl_ping_via_derp_then_direct_and_status_shows_path(net):
    a, b = _nodes(net)
    wait_path(a, b, "derp", 30.0)  # both know each other's home DERP (the matrix's "ready")
    p = meshctl(a, "ping", "-c", "10", "beasy")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("pong from")]
    assert p.returncode == 0 and lines, p.stdout + p.stderr
    b_ip = b.ip()
    assert lines[0].startswith(f"pong from beasy ({b_ip}) via DERP(lab) in "), p.stdout
    assert re.search(rf"pong from beasy \({re.escape(b_ip)}\) via 203\.0\.113\.\d+:\d+ in [\d.]+ms$", lines[-1]), (
        p.stdout
    )

    # status: direct + latency per peer, in our CLI and in tailscale's CLI against our socket
    assert a.ping(b_ip, timeout=3) is not None  # WireGuard traffic too (disco pings alone are not in Rx/Tx)
    p = meshctl(a, "status", "--latency")
    row = next((ln for ln in p.stdout.splitlines() if " beasy " in f" {ln} "), "")
    assert re.search(r"direct 203\.0\.113\.\d+:\d+\s+\d+ms", row), p.stdout
    ts = subprocess.run(
        [peer_bin("tailscale"), f"--socket={a.socket_path}", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/tmp",
    )
    assert ts.returncode == 0, ts.stderr
    peer = next(v for v in json.loads(ts.stdout)["Peer"].values() if b_ip in v["TailscaleIPs"])
    assert re.fullmatch(r"203\.0\.113\.\d+:\d+", peer["CurAddr"]) and peer["Relay"] == "lab", peer
    assert peer["RxBytes"] > 0 and peer["TxBytes"] > 0 and not peer["LastHandshake"].startswith("0001"), peer

    p = meshctl(a, "netcheck", "--json")
    rep = json.loads(p.stdout)
    assert rep["UDP"] is True and rep["PreferredDERP"] == 999 and rep["GlobalV4"].startswith("203.0.113."), rep


def test_direct_path_broken_mid_transfer_falls_back_to_derp_and_returns(net):
    a, b = _nodes(net)
    router_a = net.sites["aeasy"].router
    b_ip = b.ip()
    pinger = Pinger(a, b_ip, "fallback")
    server = xfer.receiver(b.host, 5201, b_ip)
    client = None
    try:
        wait_path(a, b, "direct", DIRECT_DEADLINE)
        client = xfer.sender(a.host, b_ip, 5201, 24 << 20, rate=1 << 20)  # 24 MiB at 1 MiB/s
        time.sleep(3)
        t_block = time.time()
        router_a.block_udp(True)
        try:
            fell_back = wait_path(a, b, "derp", FALLBACK_DEADLINE)
            time.sleep(2)
            assert pinger.replies_since(time.time() - 2) > 0, "no echo replies while on DERP"
        finally:
            router_a.block_udp(False)
        t_lift = time.time()
        back = wait_path(a, b, "direct", DIRECT_DEADLINE)
        gap = max((y - x for x, y in zip(pinger.replies(), pinger.replies()[1:]) if x >= t_block - 1), default=0)
        sent = xfer.received(client, timeout=120)
        assert xfer.received(server, timeout=30) == sent and sent[0] == str(24 << 20), sent
        print(
            f"\nfallback to DERP {fell_back:.1f}s after the block; direct {back:.1f}s after it lifted "
            f"({time.time() - t_lift:.1f}s incl. transfer end); longest echo gap {gap:.2f}s"
        )
    finally:
        pinger.stop()
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)


def test_nat_rebinding_recovers_without_restart(net):
    a, b = _nodes(net)
    router_a = net.sites["aeasy"].router
    old = router_a.wan_cidr
    pinger = Pinger(a, b.ip(), "rebind")
    try:
        wait_path(a, b, "direct", DIRECT_DEADLINE)
        t = time.time()
        router_a.change_wan_address("203.0.113.60/24")
        recovered = pinger.wait_reply_after(t + 0.5, 20.0)

        def direct_via_new_address() -> bool:
            pa = b.path_to(a)
            return pa.kind == "direct" and pa.where.startswith("203.0.113.60:") and a.path_to(b).kind == "direct"

        assert poll_until(direct_via_new_address, 60.0, 0.5), (
            f"not direct via the new address within 60s: {b.path_to(a)} {a.path_to(b)}"
        )
        print(
            f"\nrebinding: traffic back {recovered:.1f}s after the move, direct via the new address "
            f"{time.time() - t:.1f}s after it"
        )
    finally:
        pinger.stop()
        if router_a.wan_cidr != old:
            router_a.change_wan_address(old)


def test_derp_restart_reconnects_and_relays(net):
    a, b = _nodes(net)
    router_a = net.sites["aeasy"].router
    pinger = Pinger(a, b.ip(), "derp-restart")
    router_a.block_udp(True)  # DERP is then the only path
    try:
        wait_path(a, b, "derp", FALLBACK_DEADLINE + 10)
        net.headscale.restart(down_for=2.0)
        t = time.time()
        back = pinger.wait_reply_after(t, 45.0)
        time.sleep(3)
        assert pinger.replies_since(time.time() - 3) >= 5, "relayed traffic did not keep flowing"
        print(f"\nDERP restart: relayed echo replies again {back:.1f}s after headscale was back")
    finally:
        router_a.block_udp(False)
        pinger.stop()
    wait_path(a, b, "direct", DIRECT_DEADLINE * 2)
