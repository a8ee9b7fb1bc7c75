"""Linux router: applies a RouterConfig (TUN addresses and routes) with `ip -batch`, idempotently.

``set(cfg)`` adds what is missing and deletes only what this router added earlier, so
applying the same config twice runs nothing and ``close()`` restores the interface. Runs
wherever the process runs: tests put it in a namespace.

``service_addrs`` (e.g. MagicDNS's 100.100.100.100/32 and fd7a:115c:a1e0::53/128) stay on
the TUN from ``up()`` until ``close()`` whatever the RouterConfig says, so the quad-100
resolver is a local address of the host (answered by our DNS server) whenever the node runs.
They are never picked as a source address: IPv4 ones get ``scope host``, IPv6 ones
``preferred_lft 0`` (deprecated: RFC 6724 rule 3), so tunnel traffic keeps the node's own IPs.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Callable, Sequence

from engine.wgengine.reconfig import RouterConfig

Runner = Callable[[Sequence[str], str], None]


class RouterError(RuntimeError):
    pass


def _run_ip(argv: Sequence[str], batch: str) -> None:
    p = subprocess.run(list(argv), input=batch, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RouterError(f"{' '.join(argv)} failed: {p.stderr.strip()[:500]}")


class LinuxRouter:
    """Owns the addresses and routes of one interface (table main)."""

    def __init__(
        self,
        ifname: str,
        *,
        runner: Runner = _run_ip,
        service_addrs: Sequence[str] = (),
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.ifname = ifname
        self.service_addrs = tuple(service_addrs)
        self._service_on = False
        self._run = runner
        self._log = logger or logging.getLogger("engine.router")
        self._addrs: set[str] = set()
        self._routes: set[str] = set()
        self.applied = RouterConfig()
        self.batches = 0  # number of `ip -batch` invocations (tests check idempotence)

    def up(self, mtu: int | None = None) -> None:
        cmds = [f"link set dev {self.ifname} up"]
        if mtu:
            cmds.insert(0, f"link set dev {self.ifname} mtu {mtu}")
        self._batch(cmds)
        if self.service_addrs and not self._service_on:
            self._service_on = True
            self.set(self.applied)

    def _batch(self, cmds: list[str], force: bool = False) -> None:
        if not cmds:
            return
        self.batches += 1
        argv = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
        self._run(argv, "\n".join(cmds) + "\n")

    def set(self, cfg: RouterConfig) -> None:
        want_addrs = set(cfg.local_addrs)
        if self._service_on:
            want_addrs.update(self.service_addrs)
        want_routes = set(cfg.routes)
        cmds: list[str] = []
        for a in sorted(self._routes - want_routes):
            cmds.append(f"route del {a} dev {self.ifname}")
        for a in sorted(self._addrs - want_addrs):
            cmds.append(f"addr del {a} dev {self.ifname}")
        for a in sorted(want_addrs - self._addrs):
            extra = " nodad" if ":" in a else ""
            if a in self.service_addrs:
                # Never a source address: only reachable locally (IPv4 scope host; IPv6 deprecated).
                extra = " nodad preferred_lft 0" if ":" in a else " scope host"
            cmds.append(f"addr replace {a} dev {self.ifname}{extra}")
        for r in sorted(want_routes - self._routes):
            cmds.append(f"route replace {r} dev {self.ifname}")
        if cmds:
            # -force: keep going if a deletion target is already gone (e.g. the link vanished)
            self._batch(cmds, force=True)
            self._log.info(
                "router %s: %d addrs, %d routes (%d commands)",
                self.ifname,
                len(want_addrs),
                len(want_routes),
                len(cmds),
            )
        self._addrs, self._routes = want_addrs, want_routes
        self.applied = cfg

    def close(self) -> None:
        """Remove everything this router added, service addresses included (idempotent)."""
        self._service_on = False
        try:
            self.set(RouterConfig())
        except RouterError as e:
            self._log.info("router %s: restore: %s", self.ifname, e)
            self._addrs.clear()
            self._routes.clear()


__all__ = ["LinuxRouter", "RouterError"]
