"""MagicDNS subsystem for the daemon: owns the resolver, the quad-100 server and the OS configurator.

async with DNSManager(os_dns=choose_os_configurator("tun0")) as dns:   # cleans leftovers, listens
    dns.set(self_node, peers, dns_config)        # on every netmap (idempotent)
    dns.set(self_node, peers, dns_config, exit_node=peer)   # using an exit node: its peerAPI DoH resolves
    dns.set(None, (), None)                      # "--accept-dns=false" / logged out: OS restored
# on exit: OS DNS restored, listeners closed
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import subprocess
from typing import Any, Iterable, Protocol, Sequence

from engine.dns.config import QUAD100_V4, QUAD100_V6, AnyUpstream, ResolverConfig, config_from_netmap, field_of, fqdn
from engine.dns.forwarder import Forwarder
from engine.dns.osconfig import OSDNSConfig, os_config_for
from engine.dns.resolvconf_file import ResolvConfFile
from engine.dns.resolved import ResolvedConfigurator, resolved_available
from engine.dns.resolver import Resolver
from engine.dns.server import DNSServer

TRAMPLE_CHECK_INTERVAL = 1.0  # seconds between looks at resolv.conf (a stat + small read)
TRAMPLE_LIMIT = 10  # re-applies tolerated within TRAMPLE_WINDOW before leaving resolv.conf to the other program
TRAMPLE_WINDOW = 60.0


class OSConfigurator(Protocol):
    def set(self, cfg: OSDNSConfig | None) -> None: ...
    def cleanup_leftovers(self) -> bool: ...


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> rc={p.returncode}: {p.stderr.strip()}")
    return p.stdout


def choose_os_configurator(tun: str, **resolvconf_kw: Any) -> OSConfigurator:
    """systemd-resolved (per-link on the TUN) when it runs, else rewriting /etc/resolv.conf."""
    if resolved_available():
        return ResolvedConfigurator(tun, _run, logger=resolvconf_kw.get("logger"))
    return ResolvConfFile(**resolvconf_kw)


class DNSManager:
    """Lifecycle + reconfiguration of MagicDNS (see module docstring)."""

    def __init__(
        self,
        os_dns: OSConfigurator | None,
        *,
        listen: Iterable[tuple[str, int]] = ((QUAD100_V4, 53), (QUAD100_V6, 53)),
        forwarder: Forwarder | None = None,
        ipv6: bool = False,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.os_dns = os_dns
        self.resolver = Resolver()
        self._listen = list(listen)
        self._forwarder = forwarder
        self._ipv6 = ipv6
        self._log = logger or logging.getLogger("meshvpn.dns")
        self._server: DNSServer | None = None
        self._last_os: OSDNSConfig | None = None
        self._last_set: tuple | None = None  # the arguments of the last set(), to re-apply after a trample
        self._watch: asyncio.Task | None = None
        self._tramples: collections.deque[float] = collections.deque()
        self._gave_up = False
        self.trample_interval = TRAMPLE_CHECK_INTERVAL

    async def __aenter__(self) -> "DNSManager":
        if self.os_dns is not None and self.os_dns.cleanup_leftovers():
            self._log.warning("restored OS DNS left behind by a previous run")
        self._server = DNSServer(self.resolver, self._listen, forwarder=self._forwarder, logger=self._log)
        await self._server.__aenter__()
        if callable(getattr(self.os_dns, "trampled", None)):
            self._watch = asyncio.get_running_loop().create_task(self._watch_os_dns(), name="dns-trample-watch")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        try:
            if self.os_dns is not None:
                self.os_dns.set(None)
        finally:
            if self._server is not None:
                await self._server.__aexit__(*exc)
                with contextlib.suppress(Exception):
                    await self._server.forwarder.aclose()  # pooled DoH connections
                self._server = None

    def set(
        self,
        self_node: Any,
        peers: Iterable[Any],
        dns_config: Any,
        *,
        accept_dns: bool = True,
        exit_node: Any = None,
        using_exit_node: bool | None = None,
    ) -> ResolverConfig:
        """Apply a netmap. The OS is pointed at quad-100 only with accept_dns and a DNSConfig.

        exit_node / using_exit_node: see config_from_netmap (DNS through the exit node's peerAPI DoH).
        """
        peers = list(peers)
        self._last_set = (self_node, peers, dns_config, accept_dns, exit_node, using_exit_node)
        os_upstreams = getattr(self.os_dns, "original_nameservers", lambda: [])()
        cfg = (
            config_from_netmap(
                self_node,
                peers,
                dns_config,
                os_upstreams=os_upstreams,
                exit_node=exit_node,
                using_exit_node=using_exit_node,
            )
            if self_node
            else ResolverConfig()
        )
        self.resolver.set_config(cfg)
        want: OSDNSConfig | None = None
        if accept_dns and dns_config is not None and self_node:
            has_global = bool(field_of(dns_config, "resolvers", "Resolvers"))
            # Through an exit node all names go to quad-100 (tailscale: its DoH becomes a default
            # resolver), else systemd-resolved would send them to the LAN's DNS servers.
            route_all = has_global or cfg.via_exit_node or not isinstance(self.os_dns, ResolvedConfigurator)
            want = os_config_for(cfg, ipv6=self._ipv6, route_all=route_all)
        if self.os_dns is not None and want != self._last_os:
            self.os_dns.set(want)
            self._last_os = want
            self._gave_up = False  # new settings: worth writing again even after a lost fight
            self._tramples.clear()
        return cfg

    async def _watch_os_dns(self) -> None:
        """resolv.conf rewritten by another program (DHCP renewal, NetworkManager): its servers become the
        upstreams for non-tailnet names and MagicDNS is written again; after TRAMPLE_LIMIT fights within
        TRAMPLE_WINDOW seconds the other program wins until the next DNS change (as tailscale does)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.trample_interval)
            if self._last_os is None or self._last_set is None or self._gave_up:
                continue
            try:
                if not await asyncio.to_thread(self.os_dns.trampled):
                    continue
            except OSError:
                continue
            now = loop.time()
            self._tramples.append(now)
            while self._tramples and now - self._tramples[0] > TRAMPLE_WINDOW:
                self._tramples.popleft()
            if len(self._tramples) > TRAMPLE_LIMIT:
                self._gave_up = True
                self._log.error(
                    "resolv.conf keeps being overwritten by another program (%d times in %.0f s); "
                    "leaving it alone: tailnet names will not resolve until the DNS settings change",
                    len(self._tramples) - 1,
                    TRAMPLE_WINDOW,
                )
                continue
            self._log.warning(
                "resolv.conf was overwritten by another program (a DHCP client?): its servers are "
                "now the upstreams for other names, and MagicDNS is configured again"
            )
            try:
                self.os_dns.set(self._last_os)  # adopts the new file as the original, then rewrites it
                node, peers, dns_config, accept_dns, exit_node, using_exit = self._last_set
                self.set(
                    node, peers, dns_config, accept_dns=accept_dns, exit_node=exit_node, using_exit_node=using_exit
                )  # new upstreams for the resolver
            except Exception as e:  # noqa: BLE001 - keep watching
                self._log.error("re-applying DNS after the overwrite failed: %s", e)

    async def answer(self, query: bytes) -> bytes | None:
        """Answer one DNS query as quad-100 would (the peerAPI's DNS-over-HTTP); None if dropped or not running."""
        return await self._server.answer(query) if self._server is not None else None

    # -- read-only views (LocalAPI dns-osconfig / dns-query) ----------------------------------
    def os_config(self) -> OSDNSConfig | None:
        """The OS DNS settings last applied (None: the OS is left alone: accept-dns off, no OS configurator)."""
        return self._last_os

    def base_nameservers(self) -> list[str]:
        """The system's own resolvers (from before MagicDNS), the upstreams when the tailnet sets none."""
        return list(getattr(self.os_dns, "original_nameservers", lambda: [])())

    def upstreams_for(self, name: str) -> tuple[AnyUpstream, ...]:
        """Where quad-100 sends a query for `name` (Resolver's routing order); () when answered locally."""
        cfg = self.resolver.config
        n = fqdn(name)
        if n in cfg.hosts or (n.count(".") == 1 and any(n + d in cfg.hosts for d in cfg.search)):
            return ()
        best = max((s for s in cfg.routes if n == s or n.endswith("." + s)), key=len, default=None)
        if best is not None:
            return tuple(cfg.routes[best])
        if any(n == d or n.endswith("." + d) for d in cfg.local_domains):
            return ()
        return tuple(cfg.upstreams)
