"""Benchmark: iperf3 TCP and ping RTT from a client through an exit node to an "internet" host, ours vs tailscaled.

Run as root from the repo root::

    .venv/bin/python benchmarks/exit_node.py                 # 5 s x 3 rounds per direction, prints the table
    .venv/bin/python benchmarks/exit_node.py --write-doc     # also replaces its section in docs/benchmarks.md

Topology (tests/exit_tailscaled/tsnet.py's, with both kinds of client and of exit node)::

    ctl 192.0.2.1 (headscale)                      switch lan 192.0.2.0/24
    ourc .11 (our client)   tsc .12 (tailscaled client)   ourx .21 (our exit)   tsx .22 (tailscaled exit)
                                                            |                     |
                                          switch wan 198.51.100.0/24: ourx .2, tsx .3, isp .1
                                                                      isp -- inet 203.0.113.2

inet is reachable only through an exit node (isp routes, no NAT: the exit node masquerades).
Paths, all in one invocation: plain routing without VPN (tsc -> tsx's LAN address -> isp ->
inet, before any VPN runs), then ours -> tailscaled exit, ours -> ours, tailscaled -> ours,
and the reference tailscaled -> tailscaled (both real tailscaled in TUN mode). Each VPN path is
measured only once the client reports a direct (not DERP) path to its exit node.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import iperf3, machine, write_section  # noqa: E402
from tests.exit_tailscaled.tsnet import TS_ENV, approve_exit, eventually, ts_peer  # noqa: E402
from tests.lab.headscale import Headscale  # noqa: E402
from tests.lab.netlab import Host, Lab  # noqa: E402
from tests.lab.tailscaled import Tailscaled  # noqa: E402
from tests.node.labnode import DrivenNode, Node  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- exit_node:begin -->", "<!-- exit_node:end -->"
CTL, OURC, TSC, OURX, TSX = "192.0.2.1", "192.0.2.11", "192.0.2.12", "192.0.2.21", "192.0.2.22"
ISP_WAN, OURX_WAN, TSX_WAN = "198.51.100.1", "198.51.100.2", "198.51.100.3"
ISP_INET, INET = "203.0.113.1", "203.0.113.2"
TSX_NAME, TSC_NAME = "tsexit", "tsclient"
OURX_NAME = "py-ourx"  # labnode.Node names itself py-<host>

PLAIN = "plain routing, no VPN"
ROWS = {  # key -> table label
    "plain": PLAIN,
    "ours->ts": "our client -> tailscaled exit",
    "ts->ours": "tailscaled client -> our exit",
    "ours->ours": "our client -> our exit",
    "ts->ts": "tailscaled client -> tailscaled exit (reference)",
}


def _ping(h: Host, dst: str, count: int = 20) -> float:
    out = h.run(["ping", "-c", str(count), "-i", "0.2", dst], timeout=count + 30, check=False).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) if m else float("nan")


def _path(client: Host, inet: Host, seconds: int, rounds: int) -> dict:
    """Median Mbit/s client->inet and inet->client (-R) over ``rounds`` runs, retransmits, ping RTT."""
    up, down, retr = [], [], []
    for _ in range(rounds):
        e = iperf3(client, inet, INET, seconds)
        up.append(e["sum_received"]["bits_per_second"] / 1e6)
        retr.append(e["sum_sent"].get("retransmits", 0))
        e = iperf3(client, inet, INET, seconds, ["-R"])
        down.append(e["sum_received"]["bits_per_second"] / 1e6)
    return {
        "up": statistics.median(up),
        "down": statistics.median(down),
        "up_all": up,
        "down_all": down,
        "retr": statistics.median(retr),
        "rtt": _ping(client, INET),
    }


def _our_direct(node: Node, peer_name: str) -> bool:
    p = node.peer(peer_name)
    return bool(p and (p.get("Path") or {}).get("Kind") == "direct")


def _reach(client: Host, what: str, diag) -> None:
    eventually(lambda: client.ping(INET, count=1, timeout=2).returncode == 0, f"{what}: ping inet", 90, 1.0, diag)


def measure(seconds: int, rounds: int, only: list[str]) -> dict[str, dict]:
    os.environ["MESH_DEBUG_USE_DERP_HTTP"] = "1"  # headscale's embedded DERP is plain HTTP (as the lab tests set)
    res: dict[str, dict] = {}
    with Lab() as lab:
        lan, wan = lab.switch("lan"), lab.switch("wan")
        ctl, ourc, tsc, ourx, tsx = (lab.host(n) for n in ("ctl", "ourc", "tsc", "ourx", "tsx"))
        isp, inet = lab.host("isp"), lab.host("inet")
        for h, ip in ((ctl, CTL), (ourc, OURC), (tsc, TSC), (ourx, OURX), (tsx, TSX)):
            lan.attach(h, f"{ip}/24")
        for h, ip in ((isp, ISP_WAN), (ourx, OURX_WAN), (tsx, TSX_WAN)):
            wan.attach(h, f"{ip}/24")
        lab.link(isp, inet, f"{ISP_INET}/24", f"{INET}/24")
        isp.sysctl("net.ipv4.ip_forward", 1)
        for x in (ourx, tsx):
            x.add_route("203.0.113.0/24", via=ISP_WAN)
        inet.set_default_route(ISP_INET)

        # (d) plain routing, before any VPN process runs: tsc -> tsx (a plain router) -> isp -> inet
        if "plain" in only:
            tsx.sysctl("net.ipv4.ip_forward", 1)
            tsc.add_route("203.0.113.0/24", via=TSX)
            isp.add_route("192.0.2.0/24", via=TSX_WAN)
            res["plain"] = _path(tsc, inet, seconds, rounds)
            print(f"plain: {res['plain']}", flush=True)
            tsc.run(["ip", "route", "del", "203.0.113.0/24"])
            isp.run(["ip", "route", "del", "192.0.2.0/24"])

        hs = Headscale(ctl).start()
        key = hs.preauth_key("alice")
        ex = Node(ourx, hs.url, auth_key=key, args=("--advertise-exit-node",)).start()
        ex.wait_synced(0, timeout=60)
        approve_exit(hs, OURX_NAME)
        tsx.sysctl("net.ipv4.ip_forward", 1)
        tsx.sysctl("net.ipv6.conf.all.forwarding", 1)
        t_ex = Tailscaled(tsx, extra_env=TS_ENV).start()
        t_ex.up(hs.url, key, TSX_NAME, "--advertise-exit-node")
        approve_exit(hs, TSX_NAME)
        t_cl = Tailscaled(tsc, extra_env=TS_ENV).start()
        t_cl.up(hs.url, key, TSC_NAME)
        cl = DrivenNode(ourc, hs.url, auth_key=key).start()
        cl.wait_synced(3, timeout=90)
        ours_x_ip, ts_x_ip = ex.ip, t_ex.ip()

        def ours_diag() -> str:
            return f"client status peers: {cl.status().get('Peers')}\nlog:\n{cl.log()[-3000:]}"

        def ts_diag() -> str:
            return f"tailscaled client peers: {t_cl.peers()}\nlog:\n{t_cl.log()[-3000:]}"

        for key_, exit_name in (("ours->ts", TSX_NAME), ("ours->ours", OURX_NAME)):
            if key_ not in only:
                continue
            cl.call("set_exit_node", exit_name)
            cl.wait(
                lambda s: (
                    s.get("ExitNodeID") is not None
                    and cl.peer(exit_name) is not None
                    and s["ExitNodeID"] == cl.peer(exit_name)["ID"]
                ),
                f"exit node {exit_name}",
                60,
            )
            _reach(ourc, key_, ours_diag)
            eventually(lambda: _our_direct(cl, exit_name), f"{key_}: direct path", 90, 1.0, ours_diag)
            res[key_] = _path(ourc, inet, seconds, rounds)
            print(f"{key_}: {res[key_]}", flush=True)
        cl.call("set_exit_node", None)

        for key_, exit_ip, exit_name in (("ts->ours", ours_x_ip, OURX_NAME), ("ts->ts", ts_x_ip, TSX_NAME)):
            if key_ not in only:
                continue
            t_cl.cli("set", f"--exit-node={exit_ip}")
            eventually(
                lambda: (p := ts_peer(t_cl, exit_name)) and p.get("ExitNode"), f"{key_}: ExitNode", 30, 0.5, ts_diag
            )
            _reach(tsc, key_, ts_diag)
            eventually(
                lambda: (p := ts_peer(t_cl, exit_name)) and p.get("CurAddr"), f"{key_}: direct path", 90, 1.0, ts_diag
            )
            res[key_] = _path(tsc, inet, seconds, rounds)
            print(f"{key_}: {res[key_]}", flush=True)
        t_cl.cli("set", "--exit-node=")
    return res


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render(res: dict[str, dict], seconds: int, rounds: int, command: str, machine_desc: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Exit nodes: iperf3 TCP and ping RTT through an exit node (tailscaled interop lab)",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_desc}",
        f"- Command (as root, from the repo root): `{command}`",
        "- Method: headscale + our helper + real tailscaled (TUN mode, nftables) in lab namespaces, "
        "`tests/exit_tailscaled/tsnet.py`'s topology with two clients and two exit nodes on one LAN; "
        'the exit nodes reach the iperf3 server on "inet" through a router (no NAT there: the exit node '
        f"masquerades). iperf3 TCP `-t {seconds}` client->inet (up) and `-R` (down), median of {rounds} rounds; "
        "`ping -c 20 -i 0.2` average RTT to inet. VPN paths are measured once the client reports a direct "
        "path to its exit node. *Plain routing* is the same hops without any VPN (tailscaled client's host -> "
        "tailscaled exit's host as a plain router -> isp -> inet), measured first, before any VPN process.",
        "",
        "| path | TCP up Mbit/s | TCP down Mbit/s | retransmits (up) | ping RTT ms | rounds up / down |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for k, label in ROWS.items():
        if k not in res:
            continue
        r = res[k]
        rs = " / ".join(", ".join(f"{x:.0f}" for x in r[a]) for a in ("up_all", "down_all"))
        lines.append(f"| {label} | {r['up']:.0f} | {r['down']:.0f} | {r['retr']:.0f} | {r['rtt']:.3f} | {rs} |")
    ref = res.get("ts->ts")
    if ref:
        lines.append("")
        for k in ("ours->ts", "ts->ours", "ours->ours"):
            if k in res:
                r = res[k]
                lines.append(
                    f"- {ROWS[k]} / reference: up {_ratio(r['up'], ref['up'])}, down "
                    f"{_ratio(r['down'], ref['down'])}, RTT {_ratio(r['rtt'], ref['rtt'])}."
                )
    lines += [
        "",
        "The machine is shared (2 cores, other jobs running): compare the rows of one run, not runs with "
        "each other. Every VPN path shares the 2 cores between client, exit node and iperf3.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--time", type=int, default=5, help="iperf3 seconds per run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="runs per direction, the median is reported (default 3)")
    p.add_argument("--only", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--write-doc", action="store_true", help="replace this benchmark's section in docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    start_machine = machine()
    t0 = time.monotonic()
    res = measure(args.time, args.rounds, only)
    command = ".venv/bin/python benchmarks/exit_node.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    section = render(res, args.time, args.rounds, command.strip(), start_machine)
    print(section)
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.write_doc:
        write_section(DOC, BEGIN, END, section, "# Benchmarks\n\n")
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
