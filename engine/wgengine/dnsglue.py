"""MagicDNS in the engine: the quad-100 server + OS DNS (System factories), fed from netmaps and prefs (diff-keyed)."""

from __future__ import annotations

import logging
from typing import Any

from engine.wgengine.prefs import EnginePrefs, exit_spec


class MagicDNS:
    """The engine's DNSManager (None when it could not start: the node then runs without MagicDNS)."""

    def __init__(
        self, system: Any, tun: str, dns_mode: str, journal: Any, logger: logging.Logger | logging.LoggerAdapter
    ) -> None:
        self._system = system
        self._tun = tun
        self._mode = dns_mode
        self._journal = journal  # the helper's journal of OS changes (engine/recovery/journal.py)
        self.log = logger
        self.manager: Any = None  # engine.dns.manager.DNSManager while running
        self._key: tuple | None = None

    async def start(self) -> None:
        """The quad-100 server (and OS DNS later, with accept-dns); a failure leaves the node without MagicDNS."""
        log = self.log.getChild("dns")
        try:
            dns = self._system.new_dns(
                self._system.new_os_dns(self._mode, self._tun, self._journal, log), self._system.mark_socket, log
            )
            self.manager = await dns.__aenter__()
        except OSError as e:
            self.manager = None
            self.log.error("MagicDNS unavailable: %s", e)

    def apply(self, nm: Any, prefs: EnginePrefs | None, exit_peer: Any, *, force: bool = False) -> None:
        """Resolver + OS DNS for ``nm`` (None: logged out / no netmap: OS DNS restored)."""
        dns = self.manager
        if dns is None:
            return
        accept_dns = bool(prefs.corp_dns) if prefs is not None else True
        if nm is None or nm.self_node is None:
            key: tuple = (None, accept_dns)
            if force or key != self._key:
                dns.set(None, (), None, accept_dns=False)
            self._key = key
            return
        d = nm.delta
        # The exit node is part of the key: choosing, switching or clearing it (or its Node
        # changing) reconfigures at once; with one that can proxy DNS, default DNS goes to its DoH.
        using_exit = bool(prefs is not None and exit_spec(prefs))
        key = (
            id(nm.self_node),
            id(nm.dns_config),
            accept_dns,
            using_exit,
            id(exit_peer) if exit_peer is not None else None,
        )
        if not force and key == self._key and not d.full and not d.changed and not d.removed:
            return
        self._key = key
        try:
            dns.set(
                nm.self_node,
                nm.sorted_peers(),
                nm.dns_config,
                accept_dns=accept_dns,
                exit_node=exit_peer,
                using_exit_node=using_exit,
            )
        except Exception as e:  # noqa: BLE001 - OS DNS trouble must not stop the data plane
            self.log.error("DNS configuration failed: %s", e)

    def restore_os(self) -> None:
        """Give the OS its own DNS settings back (blocking, idempotent; raises what the configurator raises)."""
        os_dns = getattr(self.manager, "os_dns", None) if self.manager is not None else None
        if os_dns is not None:
            os_dns.set(None)

    async def aclose(self) -> None:
        """Stop the quad-100 server (restores OS DNS too); idempotent."""
        dns, self.manager = self.manager, None
        self._key = None
        if dns is not None:
            await dns.__aexit__(None, None, None)
