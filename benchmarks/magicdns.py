"""Benchmark: MagicDNS (100.100.100.100) query latency and throughput, ours vs tailscaled's own quad-100.

Run as root from the repo root::

    .venv/bin/python benchmarks/magicdns.py                 # prints the table
    .venv/bin/python benchmarks/magicdns.py --write-doc     # also replaces its section in docs/benchmarks.md

Topology (one LAN switch, lab namespaces, each with its own /etc/netns/<ns>/resolv.conf
pointing at the lab upstream, so nothing touches the machine's resolver)::

    ctl 192.0.2.1 headscale   ours .11 (our helper)   ts .12 (tailscaled, TUN, --accept-dns)
    tsx .22 (tailscaled exit node)   dns .53 (dnspython upstream: any name -> 192.0.2.80)

Cases, each asked of the quad-100 in the client's own namespace: a tailnet name (answered
locally), a forwarded name (to the upstream; every query a new name, so no cache can answer),
and a forwarded name while the client uses tsx as exit node (DNS-over-HTTP to tsx's peerAPI,
tsx resolves with the upstream). The same questions sent straight to the upstream give the
floor. The client (dnspython messages) runs in the client's namespace: N sequential queries
(median / p95 latency), then a burst with C queries in flight (queries/s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import machine, write_section  # noqa: E402
from tests.exit_tailscaled.tsnet import TS_ENV, approve_exit, eventually, ts_peer  # noqa: E402
from tests.lab.headscale import BASE_DOMAIN, Headscale  # noqa: E402
from tests.lab.netlab import Host, Lab  # noqa: E402
from tests.lab.tailscaled import Tailscaled  # noqa: E402
from tests.node.labnode import DrivenNode, netns_resolv_conf  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- magicdns:begin -->", "<!-- magicdns:end -->"
CTL, OURS, TS, TSX, DNS = "192.0.2.1", "192.0.2.11", "192.0.2.12", "192.0.2.22", "192.0.2.53"
QUAD100 = "100.100.100.100"
TS_NAME, TSX_NAME, OURS_NAME = "tsclient", "tsexit", "py-ours"
FWD_ZONE = "fwd.bench.example."

# The lab upstream: answers every A query with 192.0.2.80 (TXT "count.bench." -> JSON {source address: queries}).
UPSTREAM = r"""
import socket, sys
import dns.message, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
import json
n = {}
while True:
    data, addr = s.recvfrom(65535)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    qn = q.question[0].name
    if qn.to_text() == "count.bench.":
        r.answer.append(dns.rrset.from_text(qn, 0, "IN", "TXT", json.dumps(json.dumps(n))))
    else:
        n[addr[0]] = n.get(addr[0], 0) + 1
        r.answer.append(dns.rrset.from_text(qn, 60, "IN", "A", "192.0.2.80"))
    s.sendto(r.to_wire(), addr)
"""

# The client: sequential latency, then a burst with C in flight over C UDP sockets. Prints one JSON line.
CLIENT = r"""
import json, selectors, socket, statistics, sys, time
import dns.message, dns.query, dns.rdatatype
server, name, n_seq, n_burst, conc, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), float(sys.argv[6])
tmpl = name  # "{i}" in the name: a new name per query

def q(i):
    return dns.message.make_query(tmpl.replace("{i}", str(i)), "A")

lat, fails, bad = [], 0, 0
for i in range(n_seq):
    m = q(i)
    t0 = time.perf_counter()
    try:
        r = dns.query.udp(m, server, timeout=timeout)
    except Exception:
        fails += 1
        continue
    lat.append((time.perf_counter() - t0) * 1000)
    if not any(rr.rdtype == dns.rdatatype.A for rr in r.answer):
        bad += 1
out = {"seq_ok": len(lat), "seq_fail": fails, "seq_bad": bad}
if lat:
    lat.sort()
    out.update(median_ms=statistics.median(lat), p95_ms=lat[min(len(lat) - 1, int(0.95 * len(lat)))],
               min_ms=lat[0])

sel = selectors.DefaultSelector()
socks = []
for _ in range(conc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
sent = done = lost = 0
pending = {}  # sock -> (id, t_sent)
base = n_seq + 1

def send(s):
    global sent
    m = q(base + sent)
    s.send(m.to_wire())
    pending[s] = (m.id, time.perf_counter())
    sent += 1

t0 = time.perf_counter()
for s in socks:
    if sent < n_burst:
        send(s)
while pending:
    now = time.perf_counter()
    for s, (_, ts) in list(pending.items()):
        if now - ts > timeout:
            lost += 1
            del pending[s]
            if sent < n_burst:
                send(s)
    for key, _ in sel.select(0.05):
        s = key.fileobj
        try:
            data = s.recv(65535)
        except OSError:
            continue
        if s not in pending or len(data) < 2 or int.from_bytes(data[:2], "big") != pending[s][0]:
            continue
        del pending[s]
        done += 1
        if sent < n_burst:
            send(s)
wall = time.perf_counter() - t0
out.update(burst_ok=done, burst_lost=lost, qps=done / wall if wall else 0.0)
print(json.dumps(out))
"""


def ask(client: Host, server: str, name: str, n_seq: int, n_burst: int, conc: int, timeout: float = 2.0) -> dict:
    out = client.exec_python(
        CLIENT,
        server,
        name,
        str(n_seq),
        str(n_burst),
        str(conc),
        str(timeout),
        timeout=120 + (n_seq + n_burst) * timeout / max(conc, 1),
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def upstream_count(dns_host: Host) -> dict[str, int]:
    """Queries the upstream answered so far, by source address."""
    out = dns_host.exec_python(
        "import sys, dns.message, dns.query\n"
        "r = dns.query.udp(dns.message.make_query('count.bench.', 'TXT'), sys.argv[1], timeout=5)\n"
        "print(b''.join(r.answer[0][0].strings).decode())\n",
        DNS,
    ).stdout
    return json.loads(out)


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _answers(h: Host, server: str, name: str) -> bool:
    out = h.run(["dig", "+short", "+time=1", "+tries=1", f"@{server}", name], check=False).stdout
    return any(line and line[0].isdigit() for line in out.split())


def _ts_dns_diag(t: Tailscaled, name: str) -> str:
    h = t.host
    return "\n".join(
        [
            h.run(["ip", "route", "get", QUAD100], check=False).stdout,
            h.run(["dig", "+time=1", "+tries=1", f"@{QUAD100}", name], check=False).stdout,
            t.cli("dns", "status", check=False).stdout[-1500:],
            t.log()[-2000:],
        ]
    )


def measure(n_seq: int, n_burst: int, conc: int, only: list[str]) -> tuple[dict, list[str]]:
    os.environ["MESH_DEBUG_USE_DERP_HTTP"] = "1"  # headscale's embedded DERP is plain HTTP (as the lab tests set)
    res: dict[str, dict] = {}
    notes: list[str] = []
    with Lab() as lab, contextlib.ExitStack() as stack:
        lan = lab.switch("lan")
        ctl, ours, ts, tsx, dnsh = (lab.host(n) for n in ("ctl", "ours", "ts", "tsx", "dns"))
        for h, ip in ((ctl, CTL), (ours, OURS), (ts, TS), (tsx, TSX), (dnsh, DNS)):
            lan.attach(h, f"{ip}/24")
        for h in (ours, tsx):  # ts: a private /etc (Tailscaled(resolv_conf=...))
            stack.enter_context(netns_resolv_conf(h.ns, f"nameserver {DNS}\noptions timeout:1 attempts:2\n"))
        dnsh.popen_python(UPSTREAM, DNS)
        dnsh.wait_for(["sh", "-c", f"ss -lun | grep -q {DNS}:53"])

        hs = Headscale(ctl).start()
        key = hs.preauth_key("alice")
        tsx.sysctl("net.ipv4.ip_forward", 1)
        tsx.sysctl("net.ipv6.conf.all.forwarding", 1)
        t_ex = Tailscaled(tsx, extra_env=TS_ENV).start()
        t_ex.up(hs.url, key, TSX_NAME, "--advertise-exit-node")
        approve_exit(hs, TSX_NAME)
        t = Tailscaled(ts, resolv_conf=f"nameserver {DNS}\n", extra_env=TS_ENV).start()
        t.up(hs.url, key, TS_NAME)
        t.cli("set", "--accept-dns=true")
        node = DrivenNode(ours, hs.url, auth_key=key).start()
        node.wait_synced(2, timeout=90)
        ours_tailnet = f"{TS_NAME}.{BASE_DOMAIN}."  # each client asks for the other client's name
        ts_tailnet = f"{OURS_NAME}.{BASE_DOMAIN}."
        fwd = "q{i}." + FWD_ZONE

        def run(key_: str, client: Host, server: str, name: str) -> None:
            if key_.split(":")[0] not in only:
                return
            before = upstream_count(dnsh)
            r = ask(client, server, name, n_seq, n_burst, conc)
            r["upstream"] = _diff(upstream_count(dnsh), before)
            res[key_] = r
            print(f"{key_}: {r}", flush=True)

        eventually(lambda: _answers(ours, QUAD100, ours_tailnet), "our quad-100 answers", 30, 0.5)
        eventually(lambda: _answers(ours, QUAD100, "first." + FWD_ZONE), "our quad-100 forwards", 30, 0.5)
        ts_ok = True
        try:
            eventually(lambda: ts_peer(t, OURS_NAME), "tailscaled to know our node", 60, 0.5)
            eventually(
                lambda: _answers(ts, QUAD100, ts_tailnet),
                "tailscaled's quad-100 answers",
                60,
                0.5,
                lambda: _ts_dns_diag(t, ts_tailnet),
            )
            eventually(
                lambda: _answers(ts, QUAD100, "first." + FWD_ZONE),
                "tailscaled's quad-100 forwards",
                60,
                0.5,
                lambda: _ts_dns_diag(t, "first." + FWD_ZONE),
            )
        except AssertionError as e:
            ts_ok = False
            notes.append(f"tailscaled's quad-100 did not answer in its namespace: {str(e).splitlines()[0]}")
            print(e, flush=True)

        run("upstream", ours, DNS, fwd)
        run("tailnet:ours", ours, QUAD100, ours_tailnet)
        run("forward:ours", ours, QUAD100, fwd)
        if ts_ok:
            run("tailnet:ts", ts, QUAD100, ts_tailnet)
            run("forward:ts", ts, QUAD100, fwd)

        if "exit" in only:
            node.call("set_exit_node", TSX_NAME)
            node.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved", 60)
            tsx_ip = t_ex.ip()
            # traffic first (magicsock looks for a direct path only while there is some), then the direct path
            eventually(
                lambda: _answers(ours, QUAD100, "first." + FWD_ZONE),
                "our quad-100 via DoH",
                60,
                1.0,
                lambda: node.log()[-3000:],
            )
            eventually(
                lambda: (
                    ours.ping(tsx_ip, count=1, timeout=2).returncode == 0
                    and (p := node.peer(TSX_NAME))
                    and (p.get("Path") or {}).get("Kind") == "direct"
                ),
                "our direct path to tsx",
                90,
                1.0,
                lambda: json.dumps(node.peer(TSX_NAME)),
            )
            run("exit:ours", ours, QUAD100, fwd)
            node.call("set_exit_node", None)
            if ts_ok:
                t.cli("set", f"--exit-node={t_ex.ip()}")
                eventually(
                    lambda: _answers(ts, QUAD100, "first." + FWD_ZONE),
                    "tailscaled's quad-100 via DoH",
                    60,
                    1.0,
                    lambda: t.log()[-3000:],
                )
                eventually(
                    lambda: (
                        ts.ping(tsx_ip, count=1, timeout=2).returncode == 0
                        and (p := ts_peer(t, TSX_NAME))
                        and p.get("ExitNode")
                        and p.get("CurAddr")
                    ),
                    "tailscaled: exit node, direct",
                    90,
                    1.0,
                )
                run("exit:ts", ts, QUAD100, fwd)
                t.cli("set", "--exit-node=")
        node.stop()
    return res, notes


ROWS = {
    "upstream": "forwarded name, asked straight of the upstream (floor)",
    "tailnet": "tailnet name (answered locally)",
    "forward": "forwarded name (UDP to the upstream)",
    "exit": "forwarded name, exit node tsx in use (DoH via its peerAPI)",
}


HOSTS = {OURS: "ours", TS: "ts", TSX: "tsx"}


def _sources(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} from {HOSTS.get(a, a)}" for a, n in sorted(counts.items())) or "0"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render(res: dict, notes: list[str], n_seq: int, n_burst: int, conc: int, command: str, machine_desc: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## MagicDNS: quad-100 latency and throughput, ours vs tailscaled",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_desc}",
        f"- Command (as root, from the repo root): `{command}`",
        "- Method: headscale, our helper, a tailscaled client (TUN mode, `--accept-dns`) and a tailscaled exit "
        "node on one lab LAN with a dnspython upstream (any name -> one A record); each client asks the "
        "100.100.100.100 of its own namespace for the other client's MagicDNS name (tailnet) or for a new "
        f"name under `{FWD_ZONE}` per query (forwarded; no cache can answer). {n_seq} sequential queries "
        "(dnspython `dns.query.udp`, a socket per query, 2 s timeout) give median / p95; then "
        f"{n_burst} queries with {conc} in flight (one UDP socket each) give queries/s. "
        "*upstream*: the queries that reached the upstream server during the case, by sender.",
        "",
    ]
    lines += [
        "| case | server | median ms | p95 ms | burst q/s | failed seq / burst | upstream |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for k, who in (
        ("upstream", "upstream"),
        ("tailnet:ours", "ours"),
        ("tailnet:ts", "tailscaled"),
        ("forward:ours", "ours"),
        ("forward:ts", "tailscaled"),
        ("exit:ours", "ours"),
        ("exit:ts", "tailscaled"),
    ):
        if k not in res:
            continue
        r = res[k]
        lines.append(
            f"| {ROWS[k.split(':')[0]]} | {who} | {r.get('median_ms', float('nan')):.2f} | "
            f"{r.get('p95_ms', float('nan')):.2f} | {r['qps']:.0f} | "
            f"{r['seq_fail'] + r['seq_bad']} / {r['burst_lost']} | {_sources(r['upstream'])} |"
        )
    lines.append("")
    for case in ("tailnet", "forward", "exit"):
        o, t = res.get(f"{case}:ours"), res.get(f"{case}:ts")
        if o and t:
            lines.append(
                f"- {ROWS[case]}, ours / tailscaled: latency (median) "
                f"{_ratio(o.get('median_ms'), t.get('median_ms'))}, "
                f"p95 {_ratio(o.get('p95_ms'), t.get('p95_ms'))}, throughput {_ratio(o['qps'], t['qps'])}."
            )
    if res.get("exit:ours") and res.get("forward:ours"):
        o, f = res["exit:ours"], res["forward:ours"]
        lines.append(
            "- ours, exit node (DoH) / no exit node (UDP): latency "
            f"{_ratio(o.get('median_ms'), f.get('median_ms'))}, throughput {_ratio(o['qps'], f['qps'])}."
        )
    lines += [f"- Note: {n}" for n in notes]
    lines += [
        "",
        "The machine is shared (2 cores, other jobs running): compare the rows of one run, not runs with "
        "each other; the client, the servers and the upstream share the 2 cores.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--sequential", type=int, default=300, help="sequential queries per case (default 300)")
    p.add_argument("--burst", type=int, default=2000, help="queries in the burst (default 2000)")
    p.add_argument("-c", "--concurrency", type=int, default=32, help="queries in flight in the burst (default 32)")
    p.add_argument("--only", default="upstream,tailnet,forward,exit", help="comma-separated subset of cases")
    p.add_argument("--write-doc", action="store_true", help="replace this benchmark's section in docs/benchmarks.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    start_machine = machine()
    t0 = time.monotonic()
    res, notes = measure(args.sequential, args.burst, args.concurrency, only)
    command = ".venv/bin/python benchmarks/magicdns.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    section = render(res, notes, args.sequential, args.burst, args.concurrency, command.strip(), start_machine)
    print(section)
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.write_doc:
        write_section(DOC, BEGIN, END, section, "# Benchmarks\n\n")
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
