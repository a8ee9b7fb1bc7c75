"""NAT matrix cells: which sites to build, how one cell is measured (first packet, time to direct) and expectations.

A *cell* is a pair of sites (a client of NAT kind X on side "a", a client of kind Y on side
"b"; or two clients behind one router). For each cell, once both nodes have each other in
their netmaps, side a starts a kernel ping (5/s) to b's tailnet address and we record

  first   seconds from the first echo request until the first echo reply (the path used first,
          normally DERP: the WireGuard handshake and the packet travel over the relay);
  direct  seconds from the first echo request until *both* nodes report a direct path
          (None if that did not happen within the observation window);
  path    the final path of a->b and b->a as reported by the nodes.

All cells of one run share one lab (one headscale, one node per site) and run concurrently:
each node's per-peer path state is independent, and sharing saves starting ten headscales
and twenty daemons on a 2-core machine.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from tests.lab.netlab import NAT_KINDS, Lab
from tests.natmatrix.nodes import NodeKind, PathInfo
from tests.natmatrix.topology import MatrixTopology, side_label

PING_INTERVAL = 0.2  # s; the lowest interval an unprivileged ping allows, plenty to drive path discovery
POLL_INTERVAL = 0.25  # s between LocalAPI status polls per cell

# Expected final path per unordered pair of NAT kinds for tailscaled<->tailscaled, established
# empirically in this lab (docs/nat-matrix.md has the measured table):
#  - a public side ("none") gets direct with anything that can send UDP: the NATed side's ping
#    to the public address opens its own mapping and the public side answers it;
#  - easy<->easy: both mappings are endpoint-independent (Linux masquerade keeps the port),
#    so the addresses learned by STUN are the ones the simultaneous CallMeMaybe pings use;
#  - anything with "hard" behind NAT on both ends, or easy<->hard: the hard side's port toward
#    the peer is unpredictable and Linux's conntrack filtering on the easy side drops it, and
#    tailscaled does no birthday-port probing: DERP;
#  - udp-blocked: no UDP leaves the LAN at all: DERP (over HTTP/TCP).
EXPECTED_TAILSCALED: dict[frozenset[str] | str, str] = {
    frozenset({"none"}): "direct",
    frozenset({"none", "easy"}): "direct",
    frozenset({"none", "hard"}): "direct",
    frozenset({"none", "udp-blocked"}): "derp",
    frozenset({"easy"}): "direct",
    frozenset({"easy", "hard"}): "derp",
    frozenset({"easy", "udp-blocked"}): "derp",
    frozenset({"hard"}): "derp",
    frozenset({"hard", "udp-blocked"}): "derp",
    frozenset({"udp-blocked"}): "derp",
    # two clients behind one router talk over the LAN (their private endpoints)
    "same-easy": "direct",
    "same-hard": "direct",
}


# Matrix rows: (a-side kind, b-side kind) per pairing; docs/nat-matrix.md plans all three per cell.
ROWS: dict[str, tuple[str, str]] = {
    "tailscaled-tailscaled": ("tailscaled", "tailscaled"),
    "ours-ours": ("ours", "ours"),
    "ours-tailscaled": ("ours", "tailscaled"),
}
ROW_TITLES = {
    "tailscaled-tailscaled": "tailscaled ↔ tailscaled",
    "ours-ours": "ours ↔ ours",
    "ours-tailscaled": "ours ↔ tailscaled",
}


@dataclass(frozen=True)
class Cell:
    """A pair of sites: `a` pings `b`. `name` is e.g. "easy-hard" or "same-easy"."""

    name: str
    a: str  # site label
    b: str
    nat_a: str
    nat_b: str
    same_nat: bool = False

    def expected(self, table: dict = EXPECTED_TAILSCALED) -> str:
        key = f"same-{self.nat_a}" if self.same_nat else frozenset({self.nat_a, self.nat_b})
        return table[key]


@dataclass
class CellResult:
    """What one run of one cell measured."""

    cell: Cell
    ready: float | None = None  # s the cell waited for mutual reachable netmap entries
    first: float | None = None  # s to the first echo reply
    direct: float | None = None  # s until both sides report direct
    direct_a: float | None = None
    direct_b: float | None = None
    path_ab: PathInfo = PathInfo("none", "")
    path_ba: PathInfo = PathInfo("none", "")
    sent: int = 0
    received: int = 0
    final_rtt_ms: float | None = None
    want_ip_ab: str = ""  # the address a direct a->b path must use (see direct_ip)
    want_ip_ba: str = ""
    error: str = ""

    @property
    def path(self) -> str:
        """The cell's path: "direct" if both directions are direct, else "derp" (or "none"/"mixed")."""
        kinds = {self.path_ab.kind, self.path_ba.kind}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def flows(self) -> bool:
        return self.received > 0 and self.final_rtt_ms is not None


def all_cells(kinds: Iterable[str] = NAT_KINDS, same_nat: Iterable[str] = ("easy", "hard")) -> list[Cell]:
    """Every unordered pair of `kinds` (a-side x b-side) plus same-router cells for `same_nat`."""
    cells = [
        Cell(f"{ka}-{kb}", side_label("a", ka), side_label("b", kb), ka, kb)
        for ka, kb in itertools.combinations_with_replacement(list(kinds), 2)
    ]
    for k in same_nat:
        cells.append(Cell(f"same-{k}", side_label("a", k), side_label("c", k), k, k, same_nat=True))
    return cells


def parse_cells(spec: str) -> list[Cell]:
    """ "easy-hard,same-easy,..." -> cells (unknown names raise ValueError)."""
    by_name = {c.name: c for c in all_cells()}
    for c in list(by_name.values()):  # accept either order of a pair
        if not c.same_nat:
            by_name.setdefault(f"{c.nat_b}-{c.nat_a}", c)
    out = []
    for name in filter(None, (s.strip() for s in spec.split(","))):
        if name not in by_name:
            raise ValueError(f"unknown cell {name!r}; known: {sorted(by_name)}")
        out.append(by_name[name])
    return out


def direct_ip(topo: MatrixTopology, viewer: str, target: str) -> str:
    """The address `viewer` should see `target` at on a direct path: its LAN address behind a shared
    router, its own public address for kind "none", else its router's WAN (mapped) address."""
    v, t = topo.sites[viewer], topo.sites[target]
    if t.router is None or (v.router is t.router):
        return t.host.addr
    return t.router.wan_addr


def build_sites(topo: MatrixTopology, cells: Iterable[Cell]) -> None:
    """Create the sites the cells need (a-side and b-side clients, and same-router clients)."""
    cells = list(cells)
    for c in cells:
        for label, nat in ((c.a, c.nat_a), (c.b, c.nat_b)):
            if label in topo.sites or (c.same_nat and label == c.b):
                continue
            topo.add_site(label, nat)
    for c in cells:
        if c.same_nat and c.b not in topo.sites:
            topo.add_site(c.b, c.nat_b, behind=c.a)


_PING_LINE = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)")


def _ping_stats(log: str, t0: float) -> tuple[float | None, int, int]:
    """(seconds from t0 to the first reply, highest seq sent, replies) from `ping -D -O` output."""
    first = None
    received = 0
    seq_max = 0
    for line in log.splitlines():
        m = _PING_LINE.match(line)
        if not m:
            continue
        seq_max = max(seq_max, int(m.group(2)))
        if "bytes from" in line:
            received += 1
            if first is None:
                first = float(m.group(1)) - t0
    return first, seq_max, received


def measure_cell(
    topo: MatrixTopology, cell: Cell, *, window: float, settle: float = 0.0, stop_when_direct: bool = True
) -> CellResult:
    """Run one cell: wait for mutual netmap entries, ping a->b and poll both paths for `window` seconds.

    With `stop_when_direct`, the cell ends as soon as both sides are direct and a reply was seen;
    otherwise (and for cells that stay on DERP) it observes the full window. `settle` extra
    seconds are observed after direct to make sure it sticks.
    """
    a, b = topo.sites[cell.a].node, topo.sites[cell.b].node
    assert a is not None and b is not None, "start_nodes() first"
    res = CellResult(cell, want_ip_ab=direct_ip(topo, cell.a, cell.b), want_ip_ba=direct_ip(topo, cell.b, cell.a))
    a_ip, b_ip = a.ip(), b.ip()
    # Start the clock only once each node has the other in its netmap *with a way to reach it*
    # (a home DERP region or an endpoint): a udp-blocked node learns its home DERP ~0.5 s
    # after it is Running, and until then its peers log "no UDP or DERP addr" and the first
    # packet waits for the 5 s handshake retry.
    w0 = time.monotonic()
    while not (a.knows(b_ip) and b.knows(a_ip) and a.path_to(b).kind != "none" and b.path_to(a).kind != "none"):
        if time.monotonic() - w0 > 60:
            res.error = "peers never became reachable in each other's netmaps"
            return res
        time.sleep(POLL_INTERVAL)
    res.ready = time.monotonic() - w0

    host = topo.sites[cell.a].host
    # -D: a unix timestamp per line; -O: report unanswered requests (so 'sent' is visible).
    # `-w` bounds the ping's own lifetime even if this thread dies.
    # One log per cell: a host runs several cells' pings at once, so Host.popen's per-host
    # numbering of default log files could hand two of them the same file.
    log_path = topo.lab.dir / f"ping-{cell.name}.log"
    t0 = time.time()
    m0 = time.monotonic()
    with open(log_path, "wb") as out:
        proc = host.popen(
            ["ping", "-n", "-D", "-O", "-i", str(PING_INTERVAL), "-W", "1", "-w", str(int(window + settle + 5)), b_ip],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ping_log() -> str:
        return log_path.read_text(errors="replace")

    direct_since: float | None = None
    try:
        while True:
            now = time.monotonic() - m0
            try:
                pab, pba = a.path_to(b), b.path_to(a)
            except (OSError, ValueError) as e:  # a status poll can time out under load; try again
                res.error = f"status poll: {e}"
                if now >= window:
                    break
                time.sleep(POLL_INTERVAL)
                continue
            res.path_ab, res.path_ba = pab, pba
            if pab.kind == "direct" and res.direct_a is None:
                res.direct_a = now
            if pba.kind == "direct" and res.direct_b is None:
                res.direct_b = now
            both = pab.kind == "direct" and pba.kind == "direct"
            if both and direct_since is None:
                direct_since = now
                if res.direct is None:
                    res.direct = now
            elif not both:
                direct_since = None
            if res.first is None:
                res.first, _, _ = _ping_stats(ping_log(), t0)
            if stop_when_direct and direct_since is not None and res.first is not None and now - direct_since >= settle:
                break
            if now >= window + (settle if direct_since is not None else 0):
                break
            time.sleep(POLL_INTERVAL)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=5)
    res.first, res.sent, res.received = _ping_stats(ping_log(), t0)
    res.error = "" if res.received else (res.error or "no echo reply")
    res.final_rtt_ms = a.ping(b_ip, timeout=3.0)
    return res


def run_matrix(
    cells: list[Cell],
    kind_a: Callable[[str], NodeKind],
    kind_b: Callable[[str], NodeKind],
    *,
    window: float = 20.0,
    settle: float = 1.0,
    parallel: int = 12,
    log: Callable[[str], None] = lambda s: None,
    lab: Lab | None = None,
    firewall: bool = True,
) -> list[CellResult]:
    """Build one lab with every site the cells need, start the nodes, measure all cells concurrently.

    `kind_a` builds the node for a-side sites (the pinging side), `kind_b` for b- and c-side ones.
    `firewall=False` leaves out the routers' WAN input drop (see topology.py).
    """
    own = lab is None
    lab = lab or Lab()
    try:
        if own:
            lab.__enter__()
        t = time.monotonic()
        topo = MatrixTopology.build(lab, firewall=firewall)
        build_sites(topo, cells)
        log(f"lab built in {time.monotonic() - t:.1f}s: sites {sorted(topo.sites)}")
        t = time.monotonic()
        topo.start_nodes({label: (kind_a if label.startswith("a") else kind_b) for label in topo.sites})
        log(f"{len(topo.sites)} nodes Running in {time.monotonic() - t:.1f}s")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
            futs = [ex.submit(measure_cell, topo, c, window=window, settle=settle) for c in cells]
            results = []
            for c, f in zip(cells, futs):
                try:
                    results.append(f.result())
                except Exception as e:  # a broken cell is a result, not a crash of the whole matrix
                    results.append(CellResult(c, error=f"{type(e).__name__}: {e}"))
        return results
    finally:
        if own:
            lab.__exit__(None, None, None)


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


__all__ = [
    "ROWS",
    "ROW_TITLES",
    "direct_ip",
    "Cell",
    "CellResult",
    "EXPECTED_TAILSCALED",
    "all_cells",
    "parse_cells",
    "build_sites",
    "measure_cell",
    "run_matrix",
    "median",
]
