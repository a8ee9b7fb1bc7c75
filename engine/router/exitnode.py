"""Using an exit node on Linux: table 52 default routes via the TUN, fwmark policy rules, LAN throw routes.

Layout (tailscale's, see docs reference §11), for IPv4 and IPv6:

    ip rule 5210  fwmark 0x80000/0xff0000 -> lookup main      our own sockets (SO_MARK) bypass
    ip rule 5230  fwmark 0x80000/0xff0000 -> lookup default
    ip rule 5250  fwmark 0x80000/0xff0000 -> unreachable      ... and never fall into table 52
    ip rule 5270                          -> lookup 52        everything else sees table 52 first
    table 52: default dev <tun>;  throw <lan prefix> (allow-LAN: LAN stays on main)

`ExitRouter.set(cfg)` is idempotent; `set(None)` removes exactly what it installed, so
`ip rule` / `ip route show table all` dumps compare equal to before. Every rule and route is
recorded in the helper's one journal of OS changes (engine/recovery/journal.py: `Change.rule`,
`Change.route` in table 52) before it is installed and forgotten once removed, so the journal's
recovery at the next start (and `cleanup_leftovers()`) also removes what a SIGKILLed helper left.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from engine.net.tsaddr import contains_exit_routes
from engine.recovery.journal import DEFAULT_JOURNAL, Change, Journal, OwnChanges

BYPASS_MARK = 0x80000  # SO_MARK on the helper's own sockets (UDP, DERP, control)
SUBNET_ROUTE_MARK = 0x40000  # packets forwarded from the TUN (see nft.py)
MARK_MASK = 0xFF0000
ROUTE_TABLE = 52
PRIO_BYPASS_MAIN = 5210
PRIO_BYPASS_DEFAULT = 5230
PRIO_BYPASS_UNREACHABLE = 5250
PRIO_TABLE = 5270
RULE_PRIORITIES = (PRIO_BYPASS_MAIN, PRIO_BYPASS_DEFAULT, PRIO_BYPASS_UNREACHABLE, PRIO_TABLE)
SO_MARK = getattr(socket, "SO_MARK", 36)  # linux/socket.h
JOURNAL_NAME = Path(DEFAULT_JOURNAL).name  # a standalone applier's journal in `journal_dir`

_FWMARK = f"{BYPASS_MARK:#x}/{MARK_MASK:#x}"


class RouterError(RuntimeError):
    """An OS routing command failed (message carries the command and its stderr)."""


class Runner(Protocol):
    """Runs a command (argv) and returns stdout; raises RouterError on failure when check."""

    def __call__(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str: ...


def system_runner(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a command in this process's namespace."""
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    if check and p.returncode != 0:
        raise RouterError(f"{shlex.join(argv)} -> rc={p.returncode}: {p.stderr.strip()}")
    return p.stdout


def journal_runner(run: Runner) -> Callable[[Sequence[str]], "tuple[int, str]"]:
    """The journal's runner (argv -> (rc, stderr)) over one of ours, so its undo runs where we act."""

    def jrun(argv: Sequence[str]) -> tuple[int, str]:
        try:
            run(argv)
        except RouterError as e:
            return 1, str(e)
        except (OSError, subprocess.TimeoutExpired) as e:
            return 127, str(e)
        return 0, ""

    return jrun


def netns_runner(ns: str) -> Runner:
    """A runner executing inside network namespace `ns` (tests, or a helper managing a namespace)."""

    def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
        return system_runner(["ip", "netns", "exec", ns, *argv], input=input, check=check)

    return run


def offers_exit_node(allowed_ips: Iterable[str]) -> bool:
    """A peer is an exit-node option iff its AllowedIPs contain both 0.0.0.0/0 and ::/0 (tsaddr.ContainsExitRoutes)."""
    nets = set()
    for a in allowed_ips or ():
        try:
            nets.add(str(ipaddress.ip_network(str(a), strict=False)))
        except ValueError:
            continue
    return contains_exit_routes(nets)


def mark_socket(sock: socket.socket) -> None:
    """Mark one of the helper's own sockets so its traffic bypasses table 52 (never loops into the tunnel)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, BYPASS_MARK)


@dataclass(frozen=True, slots=True)
class ExitRouteConfig:
    """Route all traffic through the TUN (the exit node's peer is behind it in WireGuard)."""

    tun: str
    allow_lan: bool = False
    # Prefixes kept off the tunnel with allow_lan; None = the directly connected (link-scope)
    # networks of the main table at set() time.
    lan_prefixes: tuple[str, ...] | None = None
    ipv6: bool = True


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One `ip rule` (family 4 or 6)."""

    family: int
    priority: int
    fwmark: str | None  # "0x80000/0xff0000" or None
    action: str  # "main", "default", "52" (lookup) or "unreachable"

    def add_argv(self) -> list[str]:
        argv = ["ip", f"-{self.family}", "rule", "add", "pref", str(self.priority)]
        if self.fwmark:
            argv += ["fwmark", self.fwmark]
        argv += ["unreachable"] if self.action == "unreachable" else ["table", self.action]
        return argv

    def change(self) -> Change:
        """The journal's record of this rule (undo: `ip rule del` with the same selector)."""
        extra = ["fwmark", self.fwmark] if self.fwmark else []
        if self.action == "unreachable":
            return Change.rule(self.priority, family=self.family, extra=[*extra, "unreachable"])
        return Change.rule(self.priority, table=self.action, family=self.family, extra=extra)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route in table 52: `default dev <tun>` or `throw <prefix>`."""

    family: int
    kind: str  # "dev" or "throw"
    dst: str
    dev: str = ""

    def replace_argv(self) -> list[str]:
        if self.kind == "throw":
            return ["ip", f"-{self.family}", "route", "replace", "throw", self.dst, "table", str(ROUTE_TABLE)]
        return ["ip", f"-{self.family}", "route", "replace", self.dst, "dev", self.dev, "table", str(ROUTE_TABLE)]

    def del_argv(self) -> list[str]:
        argv = ["ip", f"-{self.family}", "route", "del"]
        argv += ["throw", self.dst] if self.kind == "throw" else [self.dst, "dev", self.dev]
        return argv + ["table", str(ROUTE_TABLE)]

    def change(self) -> Change:
        """The journal's record of this route: `<dst> table 52` (any type; table 52 is ours alone)."""
        return Change.route(self.dst, table=ROUTE_TABLE, family=self.family)


def desired_rules(families: Iterable[int]) -> list[RuleSpec]:
    """The four policy rules per family (pure)."""
    out = []
    for fam in families:
        out += [
            RuleSpec(fam, PRIO_BYPASS_MAIN, _FWMARK, "main"),
            RuleSpec(fam, PRIO_BYPASS_DEFAULT, _FWMARK, "default"),
            RuleSpec(fam, PRIO_BYPASS_UNREACHABLE, _FWMARK, "unreachable"),
            RuleSpec(fam, PRIO_TABLE, None, str(ROUTE_TABLE)),
        ]
    return out


def desired_routes(cfg: ExitRouteConfig, lan_prefixes: Sequence[str]) -> list[RouteSpec]:
    """Table-52 routes for `cfg` (pure): defaults via the TUN and, with allow_lan, throw routes."""
    fams = (4, 6) if cfg.ipv6 else (4,)
    out = [RouteSpec(f, "dev", "default", cfg.tun) for f in fams]
    if cfg.allow_lan:
        for p in lan_prefixes:
            net = ipaddress.ip_network(p, strict=False)
            if net.version in fams and net.prefixlen > 0:
                out.append(RouteSpec(net.version, "throw", str(net)))
    return out


class JournaledApplier:
    """What the OS appliers share: an injected command runner, the journal of OS changes and a logger.

    `journal` is the helper's one journal (built by the composition root, engine/service.py); without
    one (a standalone applier: tests, scripts) a journal `changes.jsonl` in `journal_dir` is used,
    undoing through the same runner.
    """

    logger_name: str

    def __init__(
        self,
        runner: Runner = system_runner,
        journal_dir: Path | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        *,
        journal: Journal | None = None,
    ) -> None:
        self._run = runner
        self._log = logger or logging.getLogger(self.logger_name)
        if journal is None:
            path = Path(journal_dir) / JOURNAL_NAME if journal_dir is not None else Path(DEFAULT_JOURNAL)
            journal = Journal(path, run=journal_runner(runner), own=self._own_changes())
        self._journal = journal
        # set() runs on the node's loop thread, reassert() in a worker thread: one at a time
        self._lock = threading.RLock()

    def _own_changes(self) -> OwnChanges:
        """What a standalone applier's own journal may undo."""
        return OwnChanges()

    def _forget(self, cids: Iterable[int]) -> None:
        for cid in cids:
            self._journal.forget(cid)


class ExitRouter(JournaledApplier):
    """Applies ExitRouteConfig to the OS (via `ip`), idempotently and journaled."""

    logger_name = "meshvpn.router.exitnode"
    # What is installed now; set() and set(None) replace these per instance, never mutate them.
    _current: ExitRouteConfig | None = None
    _rules: Sequence[RuleSpec] = ()
    _routes: Sequence[RouteSpec] = ()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._cids: dict[RuleSpec | RouteSpec, int] = {}  # journal record of each rule/route installed (or being)

    # -- queries --------------------------------------------------------------------------
    def _json(self, argv: list[str]) -> list[dict]:
        out = self._run(argv, check=False)
        try:
            return json.loads(out) if out.strip() else []
        except json.JSONDecodeError:
            return []

    def _have_ipv6(self) -> bool:
        return bool(
            self._run(["sh", "-c", "cat /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null"], check=False).strip()
            == "0"
        )

    def _rule_present(self, r: RuleSpec) -> bool:
        for e in self._json(["ip", f"-{r.family}", "-j", "rule", "show"]):
            if e.get("priority") == r.priority and self._rule_matches(e, r):
                return True
        return False

    @staticmethod
    def _rule_matches(e: dict, r: RuleSpec) -> bool:
        mark = f"{e['fwmark']}/{e.get('fwmask', '0xffffffff')}" if "fwmark" in e else None
        if mark != r.fwmark:
            return False
        if r.action == "unreachable":
            return e.get("action") == "unreachable"
        return str(e.get("table")) == r.action and "action" not in e

    def detect_lan_prefixes(self, tun: str) -> list[str]:
        """Directly connected networks (main table, link scope) not on the TUN, IPv4 and IPv6."""
        out: list[str] = []
        for fam in (4, 6):
            for e in self._json(["ip", f"-{fam}", "-j", "route", "show", "table", "main"]):
                dst, dev = e.get("dst", ""), e.get("dev", "")
                if not dst or dst == "default" or dev == tun or e.get("type", "unicast") != "unicast":
                    continue
                if fam == 4 and e.get("scope") != "link":
                    continue
                if fam == 6 and (e.get("protocol") != "kernel" or dst.startswith("fe80:")):
                    continue
                if "/" not in dst:
                    dst += "/32" if fam == 4 else "/128"
                out.append(dst)
        return out

    # -- apply ----------------------------------------------------------------------------
    def set(self, cfg: ExitRouteConfig | None) -> None:
        """Make the OS match `cfg` (None = no exit node: remove everything we installed)."""
        with self._lock:
            self._set(cfg)

    def reassert(self) -> list[str]:
        """Re-install rules/routes another program removed (`ip rule flush`, networkd); returns what was missing."""
        with self._lock:
            cfg = self._current
            if cfg is None:
                return []
            rules, routes = self.find_leftovers()
            missing = [f"IPv{r.family} rule " + " ".join(r.add_argv()[4:]) for r in self._rules if r not in rules]
            missing += [
                f"IPv{rt.family} route " + " ".join(rt.replace_argv()[4:]) for rt in self._routes if rt not in routes
            ]
            if missing:
                self._log.warning(
                    "exit routing was changed by another program (missing: %s); re-installing", "; ".join(missing)
                )
                self._set(cfg)
            return missing

    def _set(self, cfg: ExitRouteConfig | None) -> None:
        if cfg is None:
            self._remove_all()
            return
        v6 = cfg.ipv6 and self._have_ipv6()
        if v6 != cfg.ipv6:
            cfg = ExitRouteConfig(cfg.tun, cfg.allow_lan, cfg.lan_prefixes, ipv6=False)
        lan = (
            list(cfg.lan_prefixes)
            if cfg.lan_prefixes is not None
            else (self.detect_lan_prefixes(cfg.tun) if cfg.allow_lan else [])
        )
        rules = desired_rules((4, 6) if cfg.ipv6 else (4,))
        routes = desired_routes(cfg, lan)
        # Journal first (union with what is there), so a crash mid-way can still be undone.
        self._record([*rules, *routes])
        # Routes before rules: once rule 5270 exists, table 52 must already be right.
        for rt in self._routes:
            if rt not in routes:
                self._run(rt.del_argv(), check=False)
                self._forget([self._cids.pop(rt)] if rt in self._cids else [])
        for rt in routes:
            self._run(rt.replace_argv())
        for r in rules:
            if not self._rule_present(r):
                self._run(r.add_argv())
        for r in self._rules:
            if r not in rules:
                self._del_rule(r)
                self._forget([self._cids.pop(r)] if r in self._cids else [])
        self._rules, self._routes, self._current = rules, routes, cfg
        self._log.info(
            "exit routing on via %s (allow_lan=%s, %d throw routes)",
            cfg.tun,
            cfg.allow_lan,
            sum(1 for r in routes if r.kind == "throw"),
        )

    def _del_rule(self, r: RuleSpec) -> None:
        # Delete by full selector so a foreign rule at the same priority is left alone.
        argv = ["ip", f"-{r.family}", "rule", "del", "pref", str(r.priority)]
        if r.fwmark:
            argv += ["fwmark", r.fwmark]
        argv += ["unreachable"] if r.action == "unreachable" else ["table", r.action]
        for _ in range(8):  # duplicates from older crashes
            if not self._rule_present(r):
                break
            self._run(argv, check=False)

    def _remove_all(self) -> None:
        # what is installed, and what a set() that failed half-way had recorded (and may have installed)
        for r in [*self._rules, *(s for s in self._cids if isinstance(s, RuleSpec) and s not in self._rules)]:
            self._del_rule(r)
        for rt in [*self._routes, *(s for s in self._cids if isinstance(s, RouteSpec) and s not in self._routes)]:
            self._run(rt.del_argv(), check=False)
        if self._rules or self._routes:
            self._log.info("exit routing off")
        self._rules, self._routes, self._current = [], [], None
        self._forget(self._cids.values())
        self._cids.clear()

    # -- leftovers ------------------------------------------------------------------------
    def find_leftovers(self) -> tuple[list[RuleSpec], list[RouteSpec]]:
        """Our rules (priorities 5210-5270 with our selectors) and default/throw routes in table 52."""
        rules: list[RuleSpec] = []
        routes: list[RouteSpec] = []
        fams = (4, 6) if self._have_ipv6() else (4,)
        for fam in fams:
            present = self._json(["ip", f"-{fam}", "-j", "rule", "show"])
            for want in desired_rules((fam,)):
                if any(e.get("priority") == want.priority and self._rule_matches(e, want) for e in present):
                    rules.append(want)
            for e in self._json(["ip", f"-{fam}", "-j", "route", "show", "table", str(ROUTE_TABLE)]):
                if e.get("type") == "throw":
                    routes.append(RouteSpec(fam, "throw", self._norm_dst(e.get("dst", ""), fam)))
                elif e.get("dst") == "default" and e.get("dev"):
                    routes.append(RouteSpec(fam, "dev", "default", e["dev"]))
        return rules, routes

    @staticmethod
    def _norm_dst(dst: str, fam: int) -> str:
        if "/" not in dst and dst != "default":
            dst += "/32" if fam == 4 else "/128"
        return dst

    def cleanup_leftovers(self, *, keep_rules: bool = False) -> list[str]:
        """At start: remove what a previous (crashed) run installed; returns a description of it."""
        kinds = ("route",) if keep_rules else ("route", "rule")
        rep = self._journal.recover(select=lambda ch: ch.kind in kinds)
        removed: list[str] = [m for m in rep.undone if not m.startswith("already gone")]
        for spec in [s for s in self._cids if s.change().kind in kinds]:  # recovered: nothing left to forget
            del self._cids[spec]
        rules, routes = self.find_leftovers()  # what is there though no journal names it
        for rt in routes:
            self._run(rt.del_argv(), check=False)
            removed.append(" ".join(rt.del_argv()[3:]))
        if not keep_rules:
            for r in rules:
                if self._rule_present(r):
                    self._del_rule(r)
                    removed.append(" ".join(r.add_argv()[3:]))
        if removed:
            self._log.warning("removed leftovers of a previous run: %s", "; ".join(removed))
        return removed

    # -- journal --------------------------------------------------------------------------
    def _record(self, specs: Iterable[RuleSpec | RouteSpec]) -> None:
        for spec in specs:
            if spec not in self._cids:
                self._cids[spec] = self._journal.record(spec.change())
