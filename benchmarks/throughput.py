"""Benchmark: iperf3 TCP throughput of our engine pair (several offload variants) vs a wireguard-go pair.

Run as root from the repo root::

    .venv/bin/python benchmarks/throughput.py -t 10 --rounds 2
    .venv/bin/python benchmarks/throughput.py --variants engine,wireguard-go --profile

Everything runs in one lab (two namespaces, one veth) in the same invocation, alternating
variants per round so background load hits all of them alike. ``--profile`` runs the engine
nodes under cProfile (written to the lab dir and summarised; this slows them down).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import iperf3  # noqa: E402
from tests.dataplane import labpair  # noqa: E402
from tests.lab.netlab import Lab  # noqa: E402
from tests.lab.peers import WireguardGo  # noqa: E402

VARIANTS = {
    "engine": {},  # vnet_hdr + GRO coalescing on TUN write, kernel segments (no TSO reads), UDP GSO/GRO
    "engine-tso": {"tso": True},  # TUN TSO reads segmented in Python
    "engine-noudpoffload": {"gso": False, "gro": False},
    "engine-nooffload": {"offload": False, "gso": False, "gro": False},
}


def iperf(a, b, dst: str, seconds: int, extra=()) -> tuple[float, int]:
    end = iperf3(a, b, dst, seconds, extra, poll=0.05)
    return end["sum_received"]["bits_per_second"] / 1e6, end["sum_sent"].get("retransmits", 0)


def run_wggo(lab, a, b):
    x = WireguardGo(a, lab.ifname(), listen_port=51830, address="10.67.0.1/24").start()
    y = WireguardGo(b, lab.ifname(), listen_port=51830, address="10.67.0.2/24").start()
    x.add_peer(y.public_key, endpoint=f"{labpair.UL_B}:51830", allowed_ips="10.67.0.2/32")
    y.add_peer(x.public_key, endpoint=f"{labpair.UL_A}:51830", allowed_ips="10.67.0.1/32")
    labpair.wait_ping(a, "10.67.0.2")
    return (x, y), "10.67.0.2"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="engine,wireguard-go")
    ap.add_argument("--v6", action="store_true", help="IPv6 underlay endpoints for the engine")
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    names = args.variants.split(",")
    results: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    with Lab() as lab:
        a, b = labpair.link_hosts(lab)
        extra = ["-R"] if args.reverse else []
        for rnd in range(args.rounds):
            for name in names:
                if name == "wireguard-go":
                    procs, dst = run_wggo(lab, a, b)
                    results[name].append(iperf(a, b, dst, args.t, extra))
                    for p in procs:
                        p.stop()
                else:
                    cfg = dict(VARIANTS[name])
                    if args.profile:
                        cfg["profile"] = str(lab.dir / f"{name}-%s.prof")
                    pair = labpair.engine_pair(lab, v6=args.v6, hosts=(a, b), extra_cfg=cfg)
                    labpair.wait_ping(a, labpair.TUN_B)
                    results[name].append(iperf(a, b, labpair.TUN_B, args.t, extra))
                    labpair.stop_node(pair.a)
                    labpair.stop_node(pair.b)
                print(
                    f"round {rnd} {name:22s} {results[name][-1][0]:8.1f} Mbit/s  retr {results[name][-1][1]}",
                    flush=True,
                )
        if args.profile:
            import pstats
            import shutil

            keep = Path("/tmp/meshvpn-dp-prof")
            keep.mkdir(exist_ok=True)
            for prof in sorted(lab.dir.glob("*.prof")):
                shutil.copy(prof, keep / prof.name)
                if prof.name.endswith(("-tun.prof", "-udp.prof")):
                    print(f"== {prof.name}")
                    pstats.Stats(str(prof)).sort_stats("tottime").print_stats(14)
    print("\nvariant                 median Mbit/s   runs")
    for name in names:
        vals = [r[0] for r in results[name]]
        print(f"{name:22s} {statistics.median(vals):10.1f}   {', '.join(f'{v:.0f}' for v in vals)}")
    if "engine" in results and "wireguard-go" in results:
        ratio = statistics.median(r[0] for r in results["engine"]) / statistics.median(
            r[0] for r in results["wireguard-go"]
        )
        print(f"engine / wireguard-go = {ratio:.2f}x")


if __name__ == "__main__":
    main()
