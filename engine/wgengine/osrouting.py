"""OS routing around the tunnel: exit-node routing (table 52 + rules), forwarding/masquerade, the input firewall."""

from __future__ import annotations

import logging
from typing import Any

from engine.router.exitnode import ExitRouteConfig
from engine.router.inputfw import InputConfig
from engine.router.nft import ForwardConfig

REASSERT_INTERVAL = 2.0  # seconds between checks that nobody removed our exit rules / nft table


class OSRouting:
    """Owns the ExitRouter and the Forwarder of one engine (built by the System's factories)."""

    def __init__(self, system: Any, tun: str, journal: Any, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self._system = system
        self._tun = tun
        self._journal = journal  # the helper's journal of OS changes (engine/recovery/journal.py)
        self.log = logger
        self.exit_router: Any = None
        self.forwarder: Any = None
        self.exit_applied: ExitRouteConfig | None = None
        self.forward_applied: ForwardConfig | None = None

    def open(self) -> None:
        """Build both routers, remove what a crashed earlier run left behind (their records in the journal,
        through Journal.recover, and what is there unrecorded), install the input firewall."""
        self.exit_router = self._system.new_exit_router(self._journal, self.log.getChild("exitnode"))
        self.forwarder = self._system.new_forwarder(self._journal, self.log.getChild("forward"))
        for what, fn in (
            ("exit routing", self.exit_router.cleanup_leftovers),
            ("forwarding", self.forwarder.cleanup_leftovers),
        ):
            try:
                done = fn()
                if done:
                    self.log.warning("removed %s leftovers of a previous run: %s", what, done)
            except Exception as e:  # noqa: BLE001 - a start must not fail over a stale rule
                self.log.error("cleaning %s leftovers failed: %s", what, e)
        try:  # quad-100 only via lo / the TUN, tailnet sources only via the TUN (engine/router/inputfw.py)
            getattr(self.forwarder, "set_input", lambda _cfg: None)(InputConfig(self._tun))
        except Exception as e:  # noqa: BLE001 - the DNS server's own interface check still applies
            self.log.error("installing the input firewall failed: %s", e)

    def set_exit(self, using_exit: bool, allow_lan: bool) -> None:
        """Table 52 + rules while ``using_exit`` (an exit node is chosen and a netmap is applied), else none."""
        if self.exit_router is None:
            return
        want = ExitRouteConfig(self._tun, allow_lan=allow_lan) if using_exit else None
        if want == self.exit_applied:
            return
        self.exit_router.set(want)
        self.exit_applied = want

    def set_forwarding(self, on: bool) -> None:
        """Forwarding + masquerade for peers while we offer an exit node or subnet routes."""
        if self.forwarder is None:
            return
        want = ForwardConfig(self._tun) if on else None
        if want == self.forward_applied:
            return
        self.forwarder.set(want)
        self.forward_applied = want

    def reassert(self) -> None:
        """Put back exit routing / forwarding another program removed (blocking: run it in a thread)."""
        for what, applier in (("exit routing", self.exit_router), ("forwarding", self.forwarder)):
            reassert = getattr(applier, "reassert", None)
            if reassert is None:
                continue
            try:
                reassert()
            except Exception as e:  # noqa: BLE001 - keep watching; the next round retries
                self.log.error("re-installing %s failed: %s", what, e)

    def close(self) -> list[str]:
        """Remove exit routing, forwarding and the input firewall; returns what failed (each step runs)."""
        failed: list[str] = []
        steps = []
        if self.exit_router is not None:
            steps.append(("exit routing", lambda: self.exit_router.set(None)))
        if self.forwarder is not None:
            steps.append(("forwarding", lambda: self.forwarder.set(None)))
            steps.append(("input firewall", getattr(self.forwarder, "close", lambda: None)))
        for what, fn in steps:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one subsystem must not keep the others from restoring
                self.log.error("restoring %s failed: %s", what, e)
                failed.append(what)
        self.exit_applied = None
        self.forward_applied = None
        return failed
