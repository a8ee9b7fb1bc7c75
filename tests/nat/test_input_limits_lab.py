"""Attacks on a real magicsock node (lab netns): a UDP flood of disco/STUN/WireGuard junk, CallMeMaybe amplification."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.magicsock import constants as C
from tests.lab.derper import derper_available
from tests.lab.netlab import REPO_ROOT
from tests.nat.natlab import Agent, build, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not derper_available(), reason="derper not built")]

ATTACKER = str(Path(__file__).with_name("disco_attacker.py"))
ENV = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_TESTING": "1"}
A_IP, ATTACKER_IP, VICTIM_IP = "203.0.113.101", "203.0.113.66", "203.0.113.77"
VICTIM_COUNTER = (
    "add table inet victim\n"
    "add chain inet victim in { type filter hook input priority 0 ; }\n"
    f"add rule inet victim in ip saddr {A_IP} udp dport 20000-59999 counter\n"
)


class EvilPeer(Agent):
    """disco_attacker.py in `peer` mode: a tailnet member that abuses CallMeMaybe via DERP."""

    def __init__(self, host, derp_map_path):  # noqa: D107 - Agent's reader/caller, another script
        self.host = host
        self.log_path = host.lab.dir / f"attacker-{host.name}.log"
        log = open(self.log_path, "wb")
        self.proc = host.popen(
            [sys.executable, ATTACKER, "peer", "--derp-map", str(derp_map_path)],
            env=ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            bufsize=0,
        )
        log.close()
        hello = self._read(20.0)
        self.node, self.disco = hello["node"], hello["disco"]


def _rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1))


def _victim_packets(v) -> int:
    out = v.run(["nft", "list", "chain", "inet", "victim", "in"]).stdout
    return int(re.search(r"counter packets (\d+)", out).group(1))


def _delta(after: dict, before: dict, key: str) -> int:
    return after[key] - before[key]


def test_flood_and_callmemaybe_amplification_stay_bounded(lab):
    s = build(lab, "none", "none", n_derpers=1)
    evil = None
    try:
        inet = lab.switches["inet"]
        m, v = lab.host("m"), lab.host("v")
        inet.attach(m, f"{ATTACKER_IP}/24")
        inet.attach(v, f"{VICTIM_IP}/24")
        v.run(["nft", "-f", "-"], input=VICTIM_COUNTER)
        s.connect()
        s.pump()
        ok, _ = wait_for(
            lambda: s.a.path_to(s.b).get("path") == "direct" and s.b.path_to(s.a).get("path") == "direct", 30
        )
        assert ok, (s.a.status(), s.b.status())
        region = s.derpers[0].region_id
        evil = EvilPeer(m, lab.dir / "derpmap.json")
        assert evil.call("home", region=region)["connected"]
        evil.call("peers", peers=[{"node": s.a.node, "disco": s.a.disco, "derp": region}])
        s.a.call("peers", peers=[s.b.peer_json(region), {"node": evil.node, "disco": evil.disco, "derp": region}])
        rss0 = _rss_kib(s.a.proc.pid)
        c0 = s.a.status()["counters"]

        # 1. raw flood from a neighbour: disco junk (random and real-peer keys), STUN-looking, WireGuard-looking
        r = m.run(
            [
                sys.executable,
                ATTACKER,
                "flood",
                "--to",
                f"{A_IP}:{s.a.port}",
                "--seconds",
                "4",
                "--peer-disco",
                s.b.disco,
            ],
            env=ENV,
            timeout=60,
        )
        sent = json.loads(r.stdout.strip().splitlines()[-1])["sent"]
        time.sleep(1.0)
        c1 = s.a.status()["counters"]
        rss1 = _rss_kib(s.a.proc.pid)
        report = {
            "sent": sent,
            "rss_kib": (rss0, rss1),
            **{
                k: _delta(c1, c0, k)
                for k in (
                    "udp_rx",
                    "disco_dropped",
                    "ctl_rate_limited",
                    "ctl_queue_dropped",
                    "stun_unsolicited",
                    "wg_unknown_src",
                    "rx_queue_dropped",
                )
            },
            "ctl_queue_peak": c1["ctl_queue_peak"],
            "rx_queue_peak": c1["rx_queue_peak"],
        }
        print("flood:", report)
        assert sum(sent.values()) > 20_000, report
        assert _delta(c1, c0, "udp_rx") > 10_000, report
        assert _delta(c1, c0, "disco_dropped") > 1000, report  # unknown keys + bad boxes
        assert _delta(c1, c0, "ctl_rate_limited") > 1000, report  # real peer's key, one source IP
        assert _delta(c1, c0, "stun_unsolicited") > 1000, report
        assert _delta(c1, c0, "wg_unknown_src") > 1000, report
        assert c1["ctl_queue_peak"] <= C.CTL_QUEUE_MAX and c1["rx_queue_peak"] <= C.RX_QUEUE_MAX + 2, report
        assert rss1 - rss0 < 64 * 1024, report  # bounded queues: no growth with the flood

        # 2. CallMeMaybe amplification: 20 messages via DERP, 1000 victim endpoints each
        t0 = time.monotonic()
        r = evil.call("cmm", to=s.a.node, disco=s.a.disco, ip=VICTIM_IP, first_port=20000, n=1000, count=20, timeout=60)
        time.sleep(2.0)
        elapsed = time.monotonic() - t0
        st = s.a.status()
        c2 = st["counters"]
        hit = _victim_packets(v)
        report2 = {
            "cmm_sent": r["sent"],
            "endpoints_each": 1000,
            "victim_packets": hit,
            "elapsed": round(elapsed, 2),
            "cmm_endpoints_dropped": _delta(c2, c1, "cmm_endpoints_dropped"),
            "pings_rate_limited": _delta(c2, c1, "pings_rate_limited"),
            "evil_candidates": len(st["peers"][evil.node]["candidates"]),
        }
        print("callmemaybe:", report2)
        assert r["sent"] == 20, report2
        assert _delta(c2, c1, "cmm_endpoints_dropped") == 20 * (1000 - C.MAX_CMM_ENDPOINTS), report2
        assert _delta(c2, c1, "pings_rate_limited") > 0, report2
        assert 0 < hit <= C.PEER_PING_BURST + C.PEER_PING_RATE * elapsed + 1, report2  # unbounded: 20000
        assert len(st["peers"][evil.node]["candidates"]) <= C.MAX_CANDIDATES, report2

        # 3. the real peer is still pinged and answers, and data still flows directly
        pongs = st["peers"][s.b.node]["pongs_received"]
        rx = st["rx"].get(s.b.node, 0)
        ok, _ = wait_for(
            lambda: (
                (p := s.a.status())["peers"][s.b.node]["pongs_received"] > pongs + 1
                and p["peers"][s.b.node]["path"] == "direct"
                and p["rx"].get(s.b.node, 0) > rx + 3
            ),
            20,
        )
        p = s.a.status()
        assert ok, ({k: v for k, v in p["peers"][s.b.node].items() if k != "candidates"}, p["rx"], pongs, rx)
    finally:
        if evil is not None:
            evil.close()
        s.close()
