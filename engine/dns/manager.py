"""MagicDNS subsystem for the daemon: owns the resolver, the quad-100 server and the OS configurator.

    async with DNSManager(os_dns=choose_os_configurator("tun0")) as dns:   # cleans leftovers, listens
        dns.set(self_node, peers, dns_config)        # on every netmap (idempotent)
        dns.set(self_node, peers, dns_config, exit_node=peer)   # using an exit node: its peerAPI DoH resolves
        dns.set(None, (), None)                      # "--accept-dns=false" / logged out: OS restored
    # on exit: OS DNS restored, listeners closed
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from typing import Any, Iterable, Protocol, Sequence

from engine.dns.config import QUAD100_V4, QUAD100_V6, ResolverConfig, config_from_netmap
from engine.dns.forwarder import Forwarder
from engine.dns.osconfig import OSDNSConfig, os_config_for
from engine.dns.resolvconf_file import ResolvConfFile
from engine.dns.resolved import ResolvedConfigurator, resolved_available
from engine.dns.resolver import Resolver
from engine.dns.server import DNSServer


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

    async def __aenter__(self) -> "DNSManager":
        if self.os_dns is not None and self.os_dns.cleanup_leftovers():
            self._log.warning("restored OS DNS left behind by a previous run")
        self._server = DNSServer(self.resolver, self._listen, forwarder=self._forwarder, logger=self._log)
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self.os_dns is not None:
                self.os_dns.set(None)
        finally:
            if self._server is not None:
                await self._server.__aexit__(*exc)
                with contextlib.suppress(Exception):
                    await self._server.forwarder.aclose()  # pooled DoH connections
                self._server = None

    def set(self, self_node: Any, peers: Iterable[Any], dns_config: Any, *, accept_dns: bool = True,
            exit_node: Any = None, using_exit_node: bool | None = None) -> ResolverConfig:
        """Apply a netmap. The OS is pointed at quad-100 only with accept_dns and a DNSConfig.

        exit_node / using_exit_node: see config_from_netmap (DNS through the exit node's peerAPI DoH).
        """
        os_upstreams = getattr(self.os_dns, "original_nameservers", lambda: [])()
        cfg = (config_from_netmap(self_node, list(peers), dns_config, os_upstreams=os_upstreams,
                                  exit_node=exit_node, using_exit_node=using_exit_node)
               if self_node else ResolverConfig())
        self.resolver.set_config(cfg)
        want: OSDNSConfig | None = None
        if accept_dns and dns_config is not None and self_node:
            has_global = bool(_field(dns_config, "resolvers", "Resolvers"))
            # Through an exit node all names go to quad-100 (tailscale: its DoH becomes a default
            # resolver), else systemd-resolved would send them to the LAN's DNS servers.
            route_all = has_global or cfg.via_exit_node or not isinstance(self.os_dns, ResolvedConfigurator)
            want = os_config_for(cfg, ipv6=self._ipv6, route_all=route_all)
        if self.os_dns is not None and want != self._last_os:
            self.os_dns.set(want)
            self._last_os = want
        return cfg

    async def answer(self, query: bytes) -> bytes | None:
        """Answer one DNS query as quad-100 would (the peerAPI's DNS-over-HTTP); None if dropped or not running."""
        return await self._server.answer(query) if self._server is not None else None


def _field(obj: Any, attr: str, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attr, None)
