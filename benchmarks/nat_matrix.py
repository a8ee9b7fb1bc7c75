"""NAT matrix benchmark: every pair of NAT kinds, N runs per cell; median time to first packet and to a direct path.

    sudo .venv/bin/python benchmarks/nat_matrix.py [--runs 5] [--cells easy-easy,same-hard]
        [--rows tailscaled-tailscaled,ours-ours,ours-tailscaled] [--window 30] [--isolate] [--no-doc]

Each run builds a fresh lab (tests/natmatrix/topology.py: headscale with embedded DERP+STUN on an
'internet' switch, one client per NAT router) and measures all cells concurrently
(tests/natmatrix/matrix.py); --isolate gives every cell its own lab instead (slower, no
sharing of CPU between cells). Rows whose node kind is not available yet (OurNode) are
written as "pending". The table goes between the markers in docs/nat-matrix.md; raw
per-run values go to test-artifacts/natmatrix/bench.json (bench-adhoc.json with --no-doc).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import machine, write_section  # noqa: E402
from tests.lab.netlab import Lab  # noqa: E402
from tests.natmatrix.matrix import (  # noqa: E402
    EXPECTED_TAILSCALED,
    ROW_TITLES,
    ROWS,
    Cell,
    CellResult,
    all_cells,
    median,
    parse_cells,
    run_matrix,
)
from tests.natmatrix.nodes import NODE_KINDS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "nat-matrix.md"
RAW = REPO / "test-artifacts" / "natmatrix" / "bench.json"
BEGIN, END = "<!-- nat_matrix:begin -->", "<!-- nat_matrix:end -->"


def run_row(
    row: str, cells: list[Cell], runs: int, window: float, isolate: bool, firewall: bool = True
) -> dict[str, list[CellResult]]:
    kind_a, kind_b = (NODE_KINDS[k] for k in ROWS[row])
    out: dict[str, list[CellResult]] = {c.name: [] for c in cells}
    groups = [[c] for c in cells] if isolate else [cells]
    for i in range(runs):
        for group in groups:
            t = time.monotonic()
            try:
                with Lab() as lab:
                    results = run_matrix(
                        group,
                        kind_a,
                        kind_b,
                        window=window,
                        lab=lab,
                        firewall=firewall,
                        log=lambda s: print(f"  {s}", flush=True),
                    )
            except Exception as e:  # a failed build counts as a failed run of each cell in the group
                results = [CellResult(c, error=f"{type(e).__name__}: {e}") for c in group]
            for r in results:
                out[r.cell.name].append(r)
                print(
                    f"{row} run {i + 1}/{runs} {r.cell.name:<24} path={r.path:<6} first={fmt(r.first)} "
                    f"direct={fmt(r.direct)} rx={r.received}/{r.sent} {r.error}",
                    flush=True,
                )
            print(f"  ({time.monotonic() - t:.0f}s)", flush=True)
    return out


def fmt(v: float | None, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def fmt_range(vals: list[float | None], nd: int = 2) -> str:
    xs = [v for v in vals if v is not None]
    if not xs:
        return "–"
    m = median(xs)
    return f"{m:.{nd}f}" if len(xs) == 1 else f"{m:.{nd}f} ({min(xs):.{nd}f}–{max(xs):.{nd}f})"


def cell_summary(results: list[CellResult]) -> dict:
    n = len(results)
    paths: dict[str, int] = {}
    for r in results:
        paths[r.path] = paths.get(r.path, 0) + 1
    path = next(iter(paths)) if len(paths) == 1 else ", ".join(f"{p} {k}/{n}" for p, k in sorted(paths.items()))
    flowed = sum(1 for r in results if r.flows)
    last = results[-1] if results else None
    return {
        "path": path,
        "via": (
            last.path_ab.where
            if last and last.path_ab.kind == "direct"
            else f"DERP {last.path_ab.where}"
            if last and last.path_ab.kind == "derp"
            else "–"
        ),
        "first": fmt_range([r.first for r in results], 3),
        "direct": fmt_range([r.direct for r in results]),
        "direct_n": f"{sum(1 for r in results if r.direct is not None)}/{n}",
        "flows": f"{flowed}/{n}",
        "rtt": fmt(median(r.final_rtt_ms for r in results)),
    }


def render(
    cells: list[Cell],
    rows: list[str],
    data: dict[str, dict[str, list[CellResult]]],
    *,
    runs: int,
    window: float,
    isolate: bool,
    command: str,
    machine_desc: str,
    elapsed: float,
) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        f"- Date: {now}",
        f"- Machine: {machine_desc}",
        f"- Command (as root, from the repo root): `{command}`",
        f"- Runs per cell: {runs}; observation window {window:.0f} s; "
        + ("each cell in its own lab" if isolate else "all cells of a run concurrently in one lab")
        + f"; wall time {elapsed / 60:.1f} min",
        "- Times in seconds from the first echo request: median (min–max over runs). "
        "*first* = first echo reply; *direct* = both nodes report a direct path (resolution ≈ 0.25 s, "
        "the status poll interval); *via* = a→b path of the last run; *RTT* = median ms of one ping "
        "after the window, on the final path; *flows* = runs in which traffic flowed.",
        "",
        "| cell (a \\ b) | pair | expected | path | via | first | direct | direct runs | flows | RTT ms |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        for row in rows:
            title = ROW_TITLES[row]
            want = c.expected(EXPECTED_TAILSCALED)
            res = data.get(row, {}).get(c.name)
            if not res:
                kinds_ready = all(NODE_KINDS[k].available for k in ROWS[row])
                lines.append(f"| {c.name} | {title} | {want} | {'not run' if kinds_ready else 'pending'} | | | | | | |")
                continue
            s = cell_summary(res)
            lines.append(
                f"| {c.name} | {title} | {want} | {s['path']} | {s['via']} | {s['first']} | "
                f"{s['direct']} | {s['direct_n']} | {s['flows']} | {s['rtt']} |"
            )
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    write_section(DOC, BEGIN, END, section, "# NAT matrix\n\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs per cell (default 5)")
    p.add_argument("--cells", default="", help="comma list, e.g. easy-hard,same-easy (default: all)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--window", type=float, default=30.0, help="seconds to wait for direct / to watch DERP cells")
    p.add_argument("--isolate", action="store_true", help="one lab per cell instead of one per run")
    p.add_argument(
        "--bare-routers",
        action="store_true",
        help="leave out the routers' WAN input drop (shows the conntrack clash; implies --no-doc)",
    )
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/nat-matrix.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    cells = parse_cells(args.cells) if args.cells else all_cells()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in rows:
        if r not in ROWS:
            p.error(f"unknown row {r!r}")
    machine_desc = machine()
    t0 = time.monotonic()
    data: dict[str, dict[str, list[CellResult]]] = {}
    for row in rows:
        if not all(NODE_KINDS[k].available for k in ROWS[row]):
            print(f"{row}: pending (node kind not available yet)", flush=True)
            continue
        data[row] = run_row(row, cells, args.runs, args.window, args.isolate, firewall=not args.bare_routers)
    elapsed = time.monotonic() - t0
    command = "sudo .venv/bin/python benchmarks/nat_matrix.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    section = render(
        cells,
        list(ROWS),
        data,
        runs=args.runs,
        window=args.window,
        isolate=args.isolate,
        command=command.strip(),
        machine_desc=machine_desc,
        elapsed=elapsed,
    )
    print(section)
    doc = not (args.no_doc or args.bare_routers)
    raw = RAW if doc else RAW.with_name("bench-adhoc.json")  # bench.json always matches the doc
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps(
            {
                row: {cell: [dict(dataclasses.asdict(r), cell=cell, path=r.path) for r in rs] for cell, rs in d.items()}
                for row, d in data.items()
            },
            indent=1,
            default=str,
        )
    )
    if doc:
        write_doc(section)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
