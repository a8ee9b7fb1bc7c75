"""Interop: our node (control + magicsock + WireGuard) and a real tailscaled, via headscale and its DERP."""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helper.keyfile import key_file_arg
from tests.lab.netlab import REPO_ROOT
from tests.nat.natlab import home_router_firewall, wait_for

pytestmark = [pytest.mark.lab]

AGENT = str(Path(__file__).with_name("tailnet_agent.py"))


class TailnetAgent:
    def __init__(self, host, login_server: str, auth_key: str, tun: str):
        self.host = host
        self.log_path = host.lab.dir / f"tailnet-agent-{host.name}.log"
        log = open(self.log_path, "wb")
        self.proc = host.popen(
            [
                sys.executable,
                AGENT,
                "--login-server",
                login_server,
                "--auth-key",
                key_file_arg(auth_key, host.lab.dir),
                "--hostname",
                f"mesh-{host.name}",
                "--tun",
                tun,
            ],
            env={"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            bufsize=0,
        )
        log.close()
        self.last_netmap: dict = {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def read(self, timeout: float) -> dict | None:
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"agent exited: {self.log()[-3000:]}")
        msg = json.loads(line)
        if "netmap" in msg:
            self.last_netmap = msg
        return msg

    def wait_netmap(self, pred, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read(0.5)
            if self.last_netmap and pred(self.last_netmap):
                return self.last_netmap
        raise TimeoutError(f"no matching netmap; last {self.last_netmap}; log {self.log()[-3000:]}")

    def status(self) -> dict:
        self.proc.stdin.write(b"status\n")
        self.proc.stdin.flush()
        while True:
            msg = self.read(10)
            if msg is None:
                raise TimeoutError(self.log()[-3000:])
            if "status" in msg:
                return msg["status"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except Exception:  # noqa: BLE001
                self.proc.kill()


@pytest.mark.parametrize("our_nat", ["easy", "udp-blocked"])
def test_tailscaled_peer(lab, our_nat):
    """easy: WireGuard + disco with tailscaled end on a direct path; udp-blocked: all via DERP."""
    from tests.lab.headscale import Headscale
    from tests.lab.peers import PeerMissing, peer_bin
    from tests.lab.tailscaled import Tailscaled

    try:
        peer_bin("headscale")
        peer_bin("tailscaled")
    except PeerMissing as e:
        pytest.skip(str(e))
    inet = lab.switch("inet")
    ctl = lab.host("ctl")
    inet.attach(ctl, "203.0.113.5/24")
    hs = Headscale(ctl, "203.0.113.5").start()
    hs.create_user("lab")
    key = hs.preauth_key("lab", reusable=True)
    ra = lab.nat_router("ra", our_nat, inet, "203.0.113.2/24", "10.1.0.0/24")
    rb = lab.nat_router("rb", "easy", inet, "203.0.113.3/24", "10.2.0.0/24")
    home_router_firewall(ra)
    home_router_firewall(rb)
    ours, theirs = lab.host("ours"), lab.host("ts")
    ra.add_host(ours)
    rb.add_host(theirs)
    ts = Tailscaled(theirs, tun=lab.ifname("ts")).start()
    ts.up(hs.url, key, hostname="tsnode")
    ts_ip = ts.ip()
    agent = TailnetAgent(ours, hs.url, key, lab.ifname("wg"))
    try:
        nm = agent.wait_netmap(lambda m: m["self"] and m["peers"], 60)
        our_ip = nm["self"][0].split("/")[0]
        # WireGuard through our tunnel to tailscaled (first over DERP, since nothing is open yet)
        ok, _ = wait_for(lambda: ours.ping(ts_ip, count=1, timeout=2).returncode == 0, 40)
        assert ok, (agent.status(), ts.status(), agent.log()[-2000:])
        # tailscaled's disco ping to us: our pongs must be understood ("pong from ... via ...")
        out = ts.cli("ping", "--c", "10", "--timeout", "5s", our_ip, check=False, timeout=90).stdout
        print("tailscale ping (first):", out)
        assert re.search(r"pong from \S+ \(" + re.escape(our_ip) + r"\) via ", out), out
        if our_nat == "udp-blocked":
            assert "via DERP(lab)" in out, out
            st = agent.status()
            assert list(st["paths"].values())[0]["path"] == "derp"
            assert st["net_info"]["WorkingUDP"] is False and st["home_derp"] == 999
            return
        # with traffic flowing, both ends end up direct
        pinger = ours.popen(["ping", "-i", "0.2", ts_ip])

        def direct():
            st = agent.status()
            paths = list(st["paths"].values())
            return paths and paths[0]["path"] == "direct"

        ok, _ = wait_for(direct, 40)
        pinger.terminate()
        assert ok, (agent.status(), ts.status())
        out = ts.cli("ping", "--c", "5", our_ip, check=False, timeout=60).stdout
        print("tailscale ping (later):", out)
        assert re.search(r"via 203\.0\.113\.2:\d+", out), out  # direct, to our NAT's public address
    finally:
        agent.close()
        ts.stop()
