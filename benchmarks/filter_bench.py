"""Micro-benchmark of the packet filter: Filter.check_in / check_out in ns per packet, against the per-packet AEAD.

Run from the repo root (no root needed, no I/O)::

    .venv/bin/python benchmarks/filter_bench.py                 # prints the table
    .venv/bin/python benchmarks/filter_bench.py --write-doc     # also replaces its section in docs/benchmarks.md

Three filters as the daemon builds them (engine.filter.Filter.for_netmap): a typical ACL of
10 rules, headscale's allow-all, and an exit node's (allow-all, local destinations = own
addresses + 0.0.0.0/0 and ::/0 shrunk by engine.filter.localnets.local_routes around a few
interface prefixes). The reference, timed in the same run and the same way, is the
ChaCha20-Poly1305 decrypt of a 1280-byte packet with the `cryptography` package: the crypto the
data plane pays for every packet anyway. "% of AEAD" = filter ns / AEAD ns.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from benchmarks.report import machine, write_section  # noqa: E402
from engine.filter import ACCEPT, Filter  # noqa: E402
from engine.filter.localnets import local_routes  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- filter_bench:begin -->", "<!-- filter_bench:end -->"
PKT_SIZE = 1280

SELF4, SELF6 = "100.64.0.1", "fd7a:115c:a1e0::1"
PEER4, PEER6 = "100.64.0.7", "fd7a:115c:a1e0::7"
SELF_ADDRS = (f"{SELF4}/32", f"{SELF6}/128")
INET4, INET6 = "203.0.113.2", "2001:db8:1::2"  # an "internet" destination behind an exit node
# an exit node's interfaces: LAN, WAN, a docker bridge, IPv6 global + link-local
IFACE_PREFIXES = ("192.0.2.11/24", "198.51.100.2/24", "172.17.0.1/16", "2001:db8:2::2/64", "fe80::1/64")

_PORTS_ALL = {"First": 0, "Last": 65535}


def _dst(ip: str, first: int, last: int | None = None) -> dict:
    return {"IP": ip, "Ports": {"First": first, "Last": first if last is None else last}}


def typical_acl() -> list[dict]:
    """10 rules like a small company's policy (groups -> tagged servers on a few ports); the peer matches the last."""
    rules = []
    for i in range(9):  # rules the benchmark packets do not match: other sources
        rules.append(
            {
                "SrcIPs": [f"100.64.{10 + i}.0/24", f"fd7a:115c:a1e0:{10 + i}::/64", f"100.65.{i}.1"],
                "DstPorts": [
                    _dst(f"100.64.{20 + i}.0/24", 22),
                    _dst(f"100.64.{20 + i}.0/24", 443),
                    _dst(f"fd7a:115c:a1e0:{20 + i}::/64", 8000, 8099),
                ],
            }
        )
    rules.append(
        {
            "SrcIPs": [PEER4, PEER6, "100.64.99.0/24"],
            "DstPorts": [
                _dst(SELF4, 22),
                _dst(SELF6, 22),
                _dst(SELF4, 443),
                _dst(SELF6, 443),
                _dst(SELF4, 5000, 5100),
                _dst(SELF6, 5000, 5100),
            ],
        }
    )
    return rules


ALLOW_ALL = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": _PORTS_ALL}]}]  # headscale without a policy


def _ip4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    body = l4 + bytes(PKT_SIZE - 20 - len(l4))
    return (
        bytes([0x45, 0])
        + PKT_SIZE.to_bytes(2, "big")
        + bytes(4)
        + bytes([64, proto, 0, 0])
        + ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + body
    )


def _ip6(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    body = l4 + bytes(PKT_SIZE - 40 - len(l4))
    return (
        bytes([0x60, 0, 0, 0])
        + len(body).to_bytes(2, "big")
        + bytes([proto, 64])
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + body
    )


def _tcp(sport: int, dport: int, flags: int) -> bytes:
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(9) + bytes([flags]) + bytes(6)


def _udp(sport: int, dport: int) -> bytes:
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(4)


SYN, ACK = 0x02, 0x10


def packets(dst4: str, dst6: str) -> dict[str, tuple[str, bytes]]:
    """Benchmark packets: name -> (direction, bytes). Inbound ones come from PEER to dst, outbound from dst to PEER."""
    return {
        "in TCP SYN v4 (rule lookup)": ("in", _ip4(PEER4, dst4, 6, _tcp(40000, 443, SYN))),
        "in TCP ACK v4 (bulk data)": ("in", _ip4(PEER4, dst4, 6, _tcp(40000, 443, ACK))),
        "in TCP SYN v6 (rule lookup)": ("in", _ip6(PEER6, dst6, 6, _tcp(40000, 443, SYN))),
        "in UDP v4, new flow (rule lookup)": ("in", _ip4(PEER4, dst4, 17, _udp(40000, 5050))),
        "in UDP v4, reply (LRU hit)": ("in", _ip4(PEER4, dst4, 17, _udp(53, 40001))),
        "in ICMP echo v4": ("in", _ip4(PEER4, dst4, 1, bytes([8, 0]) + bytes(6))),
        "out TCP v4": ("out", _ip4(dst4, PEER4, 6, _tcp(443, 40000, ACK))),
        "out UDP v4 (LRU update)": ("out", _ip4(dst4, PEER4, 17, _udp(40001, 53))),
    }


def _time_per_op(fn, arg, n: int, rounds: int) -> tuple[float, float]:
    """(median, min) ns per call of fn(arg), over ``rounds`` rounds of ``n`` calls (loop overhead subtracted)."""
    per: list[float] = []
    r = range(n)
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in r:
            fn(arg)
        t1 = time.perf_counter_ns()
        for _ in r:
            _noop(arg)
        t2 = time.perf_counter_ns()
        per.append(((t1 - t0) - (t2 - t1)) / n)
    return statistics.median(per), min(per)


def _noop(_arg) -> None:
    return None


def filters() -> dict[str, tuple[Filter, str, str]]:
    """name -> (filter, IPv4 destination, IPv6 destination) for the benchmark packets."""
    acl, err1 = Filter.for_netmap(typical_acl(), SELF_ADDRS)
    allow, err2 = Filter.for_netmap(ALLOW_ALL, SELF_ADDRS)
    exit_nets = local_routes(["0.0.0.0/0", "::/0"], IFACE_PREFIXES)
    exitf, err3 = Filter.for_netmap(ALLOW_ALL, SELF_ADDRS, exit_nets)
    assert not (err1 or err2 or err3), (err1, err2, err3)
    return {
        "typical ACL (10 rules)": (acl, SELF4, SELF6),
        "allow-all (headscale default)": (allow, SELF4, SELF6),
        f"exit node (allow-all, {len(exit_nets)} local prefixes = {len(exitf._local4)} + {len(exitf._local6)} "
        "ranges v4 + v6)": (exitf, INET4, INET6),
    }


def measure(n: int, rounds: int) -> tuple[dict, dict[str, float]]:
    aead = ChaCha20Poly1305(bytes(range(32)))
    nonce = bytes(12)
    ct = aead.encrypt(nonce, bytes(PKT_SIZE), None)
    ref_med, ref_min = _time_per_op(lambda c: aead.decrypt(nonce, c, None), ct, n, rounds)
    ref = {"median": ref_med, "min": ref_min}
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for fname, (f, d4, d6) in filters().items():
        pk = packets(d4, d6)
        # the reply flow the "LRU hit" packet belongs to: recorded by an outbound packet first
        f.check_out(pk["out UDP v4 (LRU update)"][1])
        row: dict[str, tuple[float, float]] = {}
        for pname, (direction, pkt) in pk.items():
            fn = f.check_in if direction == "in" else f.check_out
            verdict = fn(pkt)
            assert verdict is ACCEPT, (fname, pname, f.explain_in(pkt))
            row[pname] = _time_per_op(fn, pkt, n, rounds)
        results[fname] = row
        print(f"{fname}: " + ", ".join(f"{k} {v[0]:.0f} ns" for k, v in row.items()), flush=True)
    print(f"reference ChaCha20-Poly1305 decrypt {PKT_SIZE} B: {ref_med:.0f} ns", flush=True)
    return results, ref


def render(results: dict, ref: dict[str, float], command: str, machine_desc: str, n: int, rounds: int) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fnames = list(results)
    pnames = list(next(iter(results.values())))
    lines = [
        BEGIN,
        "## Packet filter: ns per packet against the per-packet AEAD",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_desc}",
        f"- Command (from the repo root): `{command}`",
        f"- Method: `Filter.check_in` / `check_out` on {PKT_SIZE}-byte packets, one thread, {n} calls per round, "
        f"median of {rounds} rounds (loop overhead subtracted). Filters built by `Filter.for_netmap` as the "
        "daemon does; every packet is accepted. Reference in the same run: `cryptography` ChaCha20-Poly1305 "
        f"decrypt of a {PKT_SIZE}-byte packet = **{ref['median']:.0f} ns** (min {ref['min']:.0f}). "
        "Cells: ns per packet (% of that AEAD decrypt).",
        "- Filters: *typical ACL* = 10 rules of 3 sources × 3 destinations each, the benchmark peer matches the "
        "last one (worst case for the linear scan); *allow-all* = headscale's rule without a policy "
        "(`*` -> `*:*`); *exit node* = allow-all with 0.0.0.0/0 and ::/0 shrunk around "
        f"{len(IFACE_PREFIXES)} interface prefixes (`engine/filter/localnets.py` `local_routes`), "
        "packets to an internet address.",
        "",
        "| packet | " + " | ".join(fnames) + " |",
        "|---|" + "---:|" * len(fnames),
    ]
    for p in pnames:
        cells = []
        for f in fnames:
            med = results[f][p][0]
            cells.append(f"{med:.0f} ({100 * med / ref['median']:.0f}%)")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "In the data plane bulk TCP pays the `in TCP ACK` row once per coalesced write (FilterTun checks the "
        "header of a coalesced run, not each segment) and nothing outbound (FilterTun's IPv4 TCP fast path "
        "skips `check_out`); new flows pay the rule-lookup rows once.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=100_000, help="calls per round (default 100000)")
    p.add_argument("--rounds", type=int, default=7, help="rounds per case, the median is reported (default 7)")
    p.add_argument("--write-doc", action="store_true", help="replace this benchmark's section in docs/benchmarks.md")
    args = p.parse_args(argv)
    start_machine = machine()
    results, ref = measure(args.packets, args.rounds)
    command = ".venv/bin/python benchmarks/filter_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    section = render(results, ref, command.strip(), start_machine, args.packets, args.rounds)
    print(section)
    if args.write_doc:
        write_section(DOC, BEGIN, END, section, "# Benchmarks\n\n")
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
