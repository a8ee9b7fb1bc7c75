"""Benchmark: iperf3 TCP throughput and ping RTT through a wireguard-go pair and our engine pair over one veth lab.

Run as root from the repo root::

    .venv/bin/python benchmarks/wg_iperf.py            # -t 10, writes docs/benchmarks.md
    .venv/bin/python benchmarks/wg_iperf.py -t 5 --no-write

Both pairs run in the same invocation on the same two namespaces (one after the other),
so the ratio is what matters; absolute numbers depend on the machine (recorded below the
table). The raw veth figure is measured too as the ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import iperf3, machine, write_section  # noqa: E402
from tests.dataplane.labpair import wait_ping  # noqa: E402
from tests.lab.meshwg import MeshWg  # noqa: E402
from tests.lab.netlab import Host, Lab  # noqa: E402
from tests.lab.peers import WireguardGo  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- wg_iperf:begin -->", "<!-- wg_iperf:end -->"
A4, B4, TA, TB, PORT = "192.0.2.1", "192.0.2.2", "10.9.0.1", "10.9.0.2", 51820


def _iperf(a: Host, b: Host, dst: str, seconds: int, reverse: bool = False) -> float:
    """Mbit/s received, iperf3 TCP client on a -> server on b."""
    return iperf3(a, b, dst, seconds, ["-R"] if reverse else [])["sum_received"]["bits_per_second"] / 1e6


def _ping(a: Host, dst: str, count: int = 20) -> float:
    out = a.run(["ping", "-c", str(count), "-i", "0.2", dst], timeout=count + 30).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(m.group(1)) if m else float("nan")


def _pair(kind: str, lab: Lab, a: Host, b: Host):
    cls = WireguardGo if kind == "wireguard-go" else MeshWg
    x = cls(a, lab.ifname(), listen_port=PORT, address=f"{TA}/24").start()
    y = cls(b, lab.ifname(), listen_port=PORT, address=f"{TB}/24").start()
    x.add_peer(y.public_key, endpoint=f"{B4}:{PORT}", allowed_ips=f"{TB}/32")
    y.add_peer(x.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32")
    wait_ping(a, TB)
    return x, y


def measure(seconds: int, kinds: list[str]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with Lab() as lab:
        a, b = lab.host("a"), lab.host("b")
        lab.link(a, b, f"{A4}/24", f"{B4}/24")
        results["veth (no tunnel)"] = {"mbps": _iperf(a, b, B4, min(seconds, 3)), "rtt_ms": _ping(a, B4)}
        for kind in kinds:
            x, y = _pair(kind, lab, a, b)
            try:
                results[kind] = {
                    "mbps": _iperf(a, b, TB, seconds),
                    "mbps_rev": _iperf(a, b, TB, seconds, True),
                    "rtt_ms": _ping(a, TB),
                }
            finally:
                x.stop()
                y.stop()
            print(f"{kind}: {results[kind]}", flush=True)
    return results


def render(results: dict[str, dict[str, float]], seconds: int, command: str, machine_desc: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## WireGuard data plane: iperf3 TCP and ping RTT (veth lab)",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_desc}",
        f"- Command (as root, from the repo root): `{command}`",
        f"- Method: two namespaces over one veth; iperf3 TCP `-t {seconds}` client->server and `-R`; "
        "`ping -c 20 -i 0.2` average RTT through the tunnel; the raw veth line has no tunnel.",
        "",
        "| path | TCP a->b Mbit/s | TCP b->a Mbit/s | ping RTT ms |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        rev = f"{r['mbps_rev']:.0f}" if "mbps_rev" in r else "-"
        lines.append(f"| {name} | {r['mbps']:.0f} | {rev} | {r['rtt_ms']:.3f} |")
    if "ours" in results and "wireguard-go" in results:
        g, o = results["wireguard-go"], results["ours"]
        lines += [
            "",
            f"Ratio ours / wireguard-go: throughput {o['mbps'] / g['mbps']:.2f}x "
            f"(reverse {o['mbps_rev'] / g['mbps_rev']:.2f}x), RTT {o['rtt_ms'] / g['rtt_ms']:.2f}x.",
        ]
    lines += [
        "",
        "The machine is shared (2 cores, other jobs running): compare the two rows of one run, "
        "not runs with each other.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    write_section(DOC, BEGIN, END, section, "# Benchmarks\n\nFigures measured with the scripts in `benchmarks/`.\n\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-t", "--time", type=int, default=10, help="iperf3 seconds per direction (default 10)")
    p.add_argument("--only", choices=["wireguard-go", "ours"], help="measure one implementation only")
    p.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    kinds = [args.only] if args.only else ["wireguard-go", "ours"]
    start_machine = machine()
    results = measure(args.time, kinds)
    command = ".venv/bin/python benchmarks/wg_iperf.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    section = render(results, args.time, command.strip(), start_machine)
    print(section)
    if not args.no_write:
        write_doc(section)
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
