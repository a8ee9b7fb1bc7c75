"""NAT matrix benchmark: per pair of NAT kinds, time to first packet (via DERP) and time to a direct path.

    sudo .venv/bin/python benchmarks/nat_paths.py [--cells easy-easy,none-hard] [--runs 1]
                                                  [--markdown docs/nat-matrix.md]

Each cell builds a lab (tests/nat/natlab.py: derpers on an 'internet' switch, two magicsock nodes
behind NAT routers), exchanges netmap-style peer info, starts 10 datagrams/s each way and records:
  first  seconds from the first send until the peer received a packet (DERP path, B2)
  direct seconds until both sides report a direct path ('-' if not within --direct-timeout)
  path   final path classification (direct / derp)
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import write_section  # noqa: E402
from tests.lab.netlab import NAT_KINDS, Lab  # noqa: E402
from tests.nat.natlab import build  # noqa: E402


def run_cell(kind_a: str, kind_b: str, direct_timeout: float) -> dict:
    with Lab() as lab:
        s = build(lab, kind_a, kind_b)
        try:
            s.connect()
            t_b0 = s.b.status()["t"]  # b's clock when the pumps start
            t0 = time.monotonic()
            s.pump(0.1)
            first = None
            direct = None
            while time.monotonic() - t0 < direct_timeout and (first is None or direct is None):
                sa, sb = s.a.status(), s.b.status()
                if first is None and s.a.node in sb["first_rx"]:
                    first = sb["first_rx"][s.a.node] - t_b0
                if (
                    direct is None
                    and sa["peers"][s.b.node]["path"] == "direct"
                    and sb["peers"][s.a.node]["path"] == "direct"
                ):
                    direct = time.monotonic() - t0
                time.sleep(0.05)
            st = s.a.path_to(s.b)
            return {
                "first": first,
                "direct": direct,
                "path": st.get("path", "?"),
                "latency_ms": st.get("latency_ms"),
                "mvbdi": s.a.report.get("MappingVariesByDestIP"),
            }
        finally:
            s.close()


def run_break(direct_timeout: float) -> dict:
    """easy/easy: direct, then block UDP at A's router: time to DERP, then unblock: time to direct."""
    with Lab() as lab:
        s = build(lab, "easy", "easy", n_derpers=1)
        try:
            s.connect()
            s.pump(0.1)
            t0 = time.monotonic()
            while s.a.path_to(s.b).get("path") != "direct":
                if time.monotonic() - t0 > direct_timeout:
                    return {"error": "never direct"}
                time.sleep(0.05)
            s.ra.block_udp(True)
            s.ra.flush_conntrack()
            t1 = time.monotonic()
            while s.a.path_to(s.b).get("path") != "derp":
                time.sleep(0.05)
            to_derp = time.monotonic() - t1
            s.ra.block_udp(False)
            t2 = time.monotonic()
            while s.a.path_to(s.b).get("path") != "direct" or s.b.path_to(s.a).get("path") != "direct":
                if time.monotonic() - t2 > 60:
                    return {"to_derp": to_derp, "back_to_direct": None}
                time.sleep(0.05)
            return {"to_derp": to_derp, "back_to_direct": time.monotonic() - t2}
        finally:
            s.close()


def run_iperf(kind_a: str, kind_b: str, seconds: int) -> dict:
    """TCP through our WireGuard Device on magicsock (TUN MTU 1280), one iperf3 stream."""
    import json

    with Lab() as lab:
        s = build(lab, kind_a, kind_b, n_derpers=1, wg=True)
        try:
            s.connect()
            t0 = time.monotonic()
            while s.a.host.ping("100.64.0.2", count=1, timeout=2).returncode != 0:
                if time.monotonic() - t0 > 20:
                    return {"error": "no tunnel"}
            if kind_a != "udp-blocked" and kind_b != "udp-blocked":
                t0 = time.monotonic()
                while s.a.path_to(s.b).get("path") != "direct" and time.monotonic() - t0 < 20:
                    s.a.host.ping("100.64.0.2", count=1, timeout=1)
            s.b.host.popen(["iperf3", "-s", "-1", "-B", "100.64.0.2"])
            time.sleep(0.5)
            r = s.a.host.run(
                ["iperf3", "-c", "100.64.0.2", "-t", str(seconds), "-J"], check=False, timeout=seconds + 30
            )
            j = json.loads(r.stdout)
            return {
                "path": s.a.path_to(s.b).get("path"),
                "mbit": j["end"]["sum_received"]["bits_per_second"] / 1e6,
                "retr": j["end"]["sum_sent"].get("retransmits"),
            }
        finally:
            s.close()


def parse_cell(cell: str) -> tuple[str, str]:
    """'udp-blocked-easy' -> ('udp-blocked', 'easy')."""
    for k in NAT_KINDS:
        if cell.startswith(k + "-") and cell[len(k) + 1 :] in NAT_KINDS:
            return k, cell[len(k) + 1 :]
    raise SystemExit(f"bad cell {cell!r}; kinds are {NAT_KINDS}")


def fmt(v):
    return "-" if v is None else f"{v * 1000:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="", help="comma list like easy-hard; default: every unordered pair")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--direct-timeout", type=float, default=20.0)
    ap.add_argument("--markdown", default="", help="also write the table to this file")
    ap.add_argument("--iperf", action="store_true", help="iperf3 through WireGuard on magicsock per cell")
    ap.add_argument("--break-test", action="store_true", help="measure direct -> DERP -> direct (B3) instead")
    args = ap.parse_args()
    if args.iperf:
        for ka, kb in [parse_cell(c) for c in (args.cells or "none-none,easy-easy,udp-blocked-none").split(",")]:
            r = run_iperf(ka, kb, 5)
            print(
                f"{ka:>12} x {kb:<12} path={r.get('path')} {r.get('mbit', 0):.0f} Mbit/s "
                f"retr={r.get('retr')} {r.get('error', '')}"
            )
        return 0
    if args.break_test:
        for i in range(args.runs):
            r = run_break(args.direct_timeout)
            print(
                f"run {i + 1}: direct->derp {fmt(r.get('to_derp'))}, "
                f"derp->direct {fmt(r.get('back_to_direct'))} {r.get('error', '')}"
            )
        return 0
    if args.cells:
        cells = [parse_cell(c) for c in args.cells.split(",")]
    else:
        cells = list(itertools.combinations_with_replacement(NAT_KINDS, 2))
    rows = []
    for ka, kb in cells:
        res = [run_cell(ka, kb, args.direct_timeout) for _ in range(args.runs)]
        firsts = [r["first"] for r in res if r["first"] is not None]
        directs = [r["direct"] for r in res if r["direct"] is not None]
        row = {
            "a": ka,
            "b": kb,
            "path": "/".join(sorted({r["path"] for r in res})),
            "first": statistics.median(firsts) if firsts else None,
            "direct": statistics.median(directs) if directs else None,
            "direct_n": f"{len(directs)}/{len(res)}",
        }
        rows.append(row)
        print(
            f"{ka:>12} x {kb:<12} path={row['path']:<7} first={fmt(row['first'])} "
            f"direct={fmt(row['direct'])} ({row['direct_n']})",
            flush=True,
        )
    if args.markdown:
        lines = [
            "| A \\ B | path | time to first packet | time to direct | direct runs |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['a']} / {r['b']} | {r['path']} | {fmt(r['first'])} | {fmt(r['direct'])} | {r['direct_n']} |"
            )
        body = "\n".join(lines)
        write_section(Path(args.markdown), BEGIN, END, f"{BEGIN}\n{body}\n{END}\n", "# NAT matrix\n")
    return 0


BEGIN, END = "<!-- nat_paths:begin -->", "<!-- nat_paths:end -->"

if __name__ == "__main__":
    sys.exit(main())
