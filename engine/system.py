"""The composition root's OS factories (tailscaled builds tun → router → dns, then the engine): real ones or fakes.

    system = System.linux()                                   # `mesh-helper serve`
    engine = UserspaceEngine(options, system, node_key, disco_key, logger)
    System(new_tun=FakeTun, new_device=..., ...)              # unit tests: no root, no OS changes

Every field is a factory or hook; nothing here holds state. The Linux ones import their modules
lazily, so building a fake System never loads the data plane.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.net.interfaces import interface_prefixes, local_endpoints
from engine.net.tsaddr import QUAD100_PREFIXES

Logger = logging.Logger | logging.LoggerAdapter
SocketHook = Callable[[socket.socket], None]

NETNS_RUN_DIR = Path("/run/netns")  # where `ip netns add` keeps named namespaces
NETNS_ETC_DIR = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*


@dataclass(frozen=True)
class System:
    """What the userspace engine is built from (see module doc). Signatures are the Linux factories' below."""

    new_tun: Callable[[str, int], Any]  # (name, mtu) -> TUN with set_filter()/filter (FilterTun over LinuxTun)
    new_device: Callable[..., Any]  # (name, *, mtu, tun, bind, logger) -> WireGuard Device
    new_router: Callable[[str, Logger], Any]  # (tun, logger) -> LinuxRouter (addresses + main-table routes)
    # `journal`: the helper's one journal of OS changes (engine.recovery.journal.Journal), which the
    # subsystems record what they change in (built once by the composition root, engine/service.py)
    new_exit_router: Callable[[Any, Logger], Any]  # (journal, logger) -> ExitRouter (table 52 + rules)
    new_forwarder: Callable[[Any, Logger], Any]  # (journal, logger) -> nft Forwarder + input firewall
    new_os_dns: Callable[[str, str, Any, Logger], Any]  # (dns mode, tun, journal, logger) -> configurator|None
    new_dns: Callable[[Any, SocketHook, Logger], Any]  # (os configurator, upstream socket hook, logger) -> DNSManager
    new_magicsock: Callable[..., Any] | None  # (node, disco, *, port, fwmark, control_url, logger); None = plain UDP
    new_peerapi: Callable[[Any, str, Logger], Any]  # (DNSManager|None, self name, logger) -> PeerAPIServer
    mark_socket: SocketHook  # SO_MARK one of our sockets so it bypasses table 52 (never raises)
    install_bypass_marking: Callable[[], None]  # mark whatever still dials unmarked (process-wide)
    interface_prefixes: Callable[[Iterable[str]], tuple[str, ...]] = interface_prefixes
    local_endpoints: Callable[[int, Iterable[str]], list[str]] = local_endpoints
    hostname: Callable[[], str] = socket.gethostname
    clock: Callable[[], float] = time.time  # wall clock (unix seconds)

    @classmethod
    def linux(cls) -> "System":
        """The real Linux subsystems (needs root / CAP_NET_ADMIN when used)."""
        return cls(
            new_tun=linux_tun,
            new_device=linux_device,
            new_router=linux_router,
            new_exit_router=linux_exit_router,
            new_forwarder=linux_forwarder,
            new_os_dns=linux_os_dns,
            new_dns=linux_dns,
            new_magicsock=linux_magicsock,
            new_peerapi=linux_peerapi,
            mark_socket=quiet(_mark_socket),
            install_bypass_marking=install_bypass_marking,
        )


# --- the Linux factories ------------------------------------------------------------------


def linux_tun(name: str, mtu: int) -> Any:
    from engine.dataplane.filtertun import FilterTun
    from engine.dataplane.tun_linux import LinuxTun

    return FilterTun(LinuxTun.create(name, mtu=mtu, offload=True))


def linux_device(name: str, *, mtu: int, tun: Any, bind: Any, logger: Logger) -> Any:
    from engine.dataplane.device import Device

    return Device(name, mtu=mtu, tun=tun, logger=logger, bind=bind)


def linux_router(tun: str, logger: Logger) -> Any:
    from engine.router.linux import LinuxRouter

    return LinuxRouter(tun, service_addrs=QUAD100_PREFIXES, logger=logger)


def linux_exit_router(journal: Any, logger: Logger) -> Any:
    from engine.router.exitnode import ExitRouter

    return ExitRouter(journal=journal, logger=logger)


def linux_forwarder(journal: Any, logger: Logger) -> Any:
    from engine.router.nft import Forwarder

    return Forwarder(journal=journal, logger=logger)


def linux_os_dns(mode: str, tun: str, journal: Any, logger: Logger) -> Any:
    """The OS DNS configurator for ``mode`` (auto, resolv.conf, resolved, none); None = leave the OS alone."""
    if mode == "none":
        return None
    if os_dns_shared_with_host():
        logger.warning(
            "this network namespace shares /etc/resolv.conf with the host: "
            "not changing OS DNS (create /etc/netns/<ns>/resolv.conf to allow it)"
        )
        return None
    from engine.dns.manager import choose_os_configurator
    from engine.dns.resolvconf_file import ResolvConfFile

    if mode == "resolv.conf":
        return ResolvConfFile(journal=journal, logger=logger)
    if mode == "resolved":
        from engine.dns.manager import _run
        from engine.dns.resolved import ResolvedConfigurator

        return ResolvedConfigurator(tun, _run, logger=logger)
    return choose_os_configurator(tun, journal=journal, logger=logger)


def linux_dns(os_dns: Any, socket_hook: SocketHook, logger: Logger) -> Any:
    from engine.dns.forwarder import Forwarder as DNSForwarder
    from engine.dns.manager import DNSManager

    return DNSManager(os_dns, forwarder=DNSForwarder(socket_hook=socket_hook), logger=logger)


def linux_magicsock(
    node_key: Any, disco_key: Any, *, port: int, fwmark: int, control_url: str | None, logger: Logger
) -> Any:
    from engine.wgengine.transport import NodeTransport

    return NodeTransport(node_key, disco_key, port=port, fwmark=fwmark, control_url=control_url, logger=logger)


def linux_peerapi(dns: Any, self_name: str, logger: Logger) -> Any:
    from engine.peerapi import PeerAPICore
    from engine.peerapi.server import PeerAPIServer

    core = PeerAPICore(dns_available=dns is not None, self_name=self_name)
    return PeerAPIServer(core, dns.answer if dns is not None else None, logger=logger)


# --- namespaces ---------------------------------------------------------------------------


def named_netns() -> str | None:
    """The `ip netns` name of the network namespace this process runs in, or None (host / unnamed)."""
    try:
        me = os.stat("/proc/self/ns/net")
        for entry in os.scandir(NETNS_RUN_DIR):
            with contextlib.suppress(OSError):
                st = os.stat(entry.path)
                if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                    return entry.name
    except OSError:
        pass
    return None


def os_dns_shared_with_host() -> bool:
    """True if we run in a named network namespace that has no /etc/netns/<name>/resolv.conf of its own.

    Then /etc/resolv.conf is the host's file, and pointing it at quad-100 would break the
    host's DNS (the 100.100.100.100 server lives in our namespace only).
    """
    ns = named_netns()
    return ns is not None and not (NETNS_ETC_DIR / ns / "resolv.conf").exists()


# --- our own sockets bypass the exit node ---------------------------------------------------


def _mark_socket(sock: socket.socket) -> None:
    from engine.router.exitnode import mark_socket

    mark_socket(sock)


def quiet(fn: SocketHook) -> SocketHook:
    """A socket hook that never raises (SO_MARK needs CAP_NET_ADMIN)."""

    def hook(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            fn(sock)

    return hook


_bypass_marking = {"installed": False}  # process-wide by nature: audit hooks cannot be removed


def install_bypass_marking() -> None:
    """Give every unmarked IPv4/IPv6 socket this process connects SO_MARK BYPASS_MARK (just before connect).

    Only for what still dials without a mark: magicsock's netcheck TCP-latency fallback
    (engine/magicsock/conn.py ``_tcp_latency``, asyncio.open_connection(host, port) to each DERP
    region). Everything else is marked explicitly (control: ControlOptions.socket_hook, DNS
    upstreams: the forwarder's hook, WireGuard/magicsock UDP and DERP TCP: their fwmark); the audit
    hook leaves already-marked sockets alone. Remove it once that dial marks its socket too.
    Marking is harmless where no policy rules exist.
    """
    if _bypass_marking["installed"]:
        return
    from engine.router.exitnode import BYPASS_MARK, SO_MARK

    inet = (socket.AF_INET, socket.AF_INET6)

    def hook(event: str, args: tuple) -> None:
        if event != "socket.connect":
            return
        s = args[0]
        try:
            if s.family in inet and s.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0:
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, BYPASS_MARK)
        except (OSError, AttributeError):
            pass

    sys.addaudithook(hook)
    _bypass_marking["installed"] = True
