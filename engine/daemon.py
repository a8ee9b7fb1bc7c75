"""Headless node runner: `mesh-helper --login-server URL --auth-key KEY --state FILE` joins a tailnet.

Composition (one asyncio loop; the WireGuard data plane runs in its own worker threads)::

    state file (0600: machine/node/disco/NL keys) -> ControlClient --NetMapUpdated--> apply_netmap
        -> Device.upsert_peer/remove_peer (diff only)        WireGuard peers (exit node's /0 only when selected)
        -> LinuxRouter.set(RouterConfig)                     TUN addresses + main-table routes (+ quad-100)
        -> FilterTun.set_filter(Filter.for_netmap(...))      packet filter, per packet in the data plane
        -> DNSManager.set(...)                               MagicDNS resolver on 100.100.100.100 + OS DNS
    prefs (flags / set_* API) -> ExitRouter (table 52 + rules), Forwarder (nft masquerade), Hostinfo.RoutableIPs

The helper's own sockets carry SO_MARK 0x80000 (WireGuard UDP via Device.set_fwmark, DNS
upstreams via the forwarder hook, control connections via ControlOptions.socket_hook, DERP via
its fwmark, stray dials via ``install_bypass_marking``) so they never enter table 52. WireGuard runs over magicsock
(engine/nodetransport.py: one UDP socket + DERP + disco + STUN); endpoints published to control are
its STUN-mapped and interface addresses, PreferredDERP its netcheck's home region.
At start, leftovers of a crashed run (rules,
table 52, nft table, resolv.conf) are removed; SIGTERM/SIGINT stop the client and restore DNS,
exit routing, forwarding, routes and addresses, then close the TUN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from engine import authkey
from engine.atomicfile import write_atomic
from engine.control.client import (
    AuthURL,
    ControlClient,
    ControlOptions,
    LoginFailed,
    NetMapUpdated,
    NodeKeyRotated,
    StatusChanged,
)
from engine.keys import DiscoPrivate, MachinePrivate, NLPrivate, NodePrivate
from engine.netmap import NetworkMap
from engine.reconfig import (
    CGNAT_V4,
    NO_CHANGES,
    TAILSCALE_ULA_V6,
    ReconfigOptions,
    RouterConfig,
    WgConfig,
    diff_wg,
    router_config,
    wg_config,
)
from engine.tailcfg import Hostinfo, NetInfo
from engine.trustedpath import check_dir, check_file_path, first_refusal
from engine.tsaddr import QUAD100_PREFIXES

VERSION = "0.1.0"
DEFAULT_TUN = "mesh0"
DEFAULT_MTU = 1280  # tailscaled's default TUN MTU (net/tstun/mtu.go)
DEFAULT_DERP_REGION = 999  # headscale's embedded DERP region; NAT helper will pick it properly
DEFAULT_RUN_DIR = Path("/run/meshvpn")  # journals of OS changes (exit routes, nft, resolv.conf backup)
EXIT_ROUTES = ("0.0.0.0/0", "::/0")
REASSERT_INTERVAL = 2.0  # seconds between checks that nobody removed our exit rules / nft table
QUAD100_ADDRS = QUAD100_PREFIXES  # MagicDNS service addresses on the TUN
DNS_MODES = ("auto", "resolv.conf", "resolved", "none")


# --- state file -------------------------------------------------------------------------


@dataclass
class NodeState:
    machine_key: MachinePrivate
    node_key: NodePrivate
    disco_key: DiscoPrivate
    nl_key: NLPrivate
    backend_log_id: str
    registered_url: str | None = None  # control URL we last registered with

    def __repr__(self) -> str:
        return (f"NodeState(machine={self.machine_key.public().short()}, node={self.node_key.public().short()}, "
                f"disco={self.disco_key.public().short()})")

    @classmethod
    def generate(cls) -> "NodeState":
        return cls(MachinePrivate.generate(), NodePrivate.generate(), DiscoPrivate.generate(),
                   NLPrivate.generate(), uuid.uuid4().hex + uuid.uuid4().hex)

    def to_json(self) -> dict:
        return {
            "MachineKey": self.machine_key.to_text(),
            "NodeKey": self.node_key.to_text(),
            "DiscoKey": self.disco_key.to_text(),
            "NLKey": self.nl_key.to_text(),
            "BackendLogID": self.backend_log_id,
            "RegisteredURL": self.registered_url,
        }

    @classmethod
    def from_json(cls, d: dict) -> "NodeState":
        return cls(
            MachinePrivate.from_text(d["MachineKey"]), NodePrivate.from_text(d["NodeKey"]),
            DiscoPrivate.from_text(d["DiscoKey"]), NLPrivate.from_text(d["NLKey"]),
            d.get("BackendLogID") or uuid.uuid4().hex * 2, d.get("RegisteredURL"),
        )


def load_state(path: Path, log: logging.Logger) -> NodeState:
    if path.exists():
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("state file %s had mode %o; tightening to 0600", path, stat.S_IMODE(st.st_mode))
            os.chmod(path, 0o600)
        try:
            return NodeState.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError) as e:
            raise SystemExit(f"state file {path} is corrupt ({type(e).__name__}); move it away to start fresh")
    state = NodeState.generate()
    save_state(path, state)
    log.info("created state file %s (%r)", path, state)
    return state


def save_state(path: Path, state: NodeState) -> None:
    """Atomically write the state file with mode 0600 (O_EXCL temp name, engine/atomicfile.py)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(state.to_json(), indent=1), mode=0o600)


# --- endpoints --------------------------------------------------------------------------


def local_endpoints(port: int, *, exclude_ifaces: set[str]) -> list[str]:
    """Interface addresses (no loopback/link-local/Tailscale ranges) with the UDP port, v4 first."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        ifaces = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    v4, v6 = [], []
    for itf in ifaces:
        if itf.get("ifname") in exclude_ifaces or "UP" not in itf.get("flags", []):
            continue
        for a in itf.get("addr_info", []):
            try:
                ip = ipaddress.ip_address(a.get("local", ""))
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip in CGNAT_V4 or ip in TAILSCALE_ULA_V6:
                continue
            (v4 if ip.version == 4 else v6).append(f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}")
    return v4 + v6


# --- preferences -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodePrefs:
    """What the user chose (flags at start, Node.set_* at run time); tailscale's ipn.Prefs subset."""

    exit_node: str | None = None  # peer IP, name (short or FQDN), StableID or numeric node ID
    exit_node_allow_lan: bool = False
    advertise_exit_node: bool = False
    advertise_routes: tuple[str, ...] = ()  # canonical CIDRs (subnet routes we offer)
    accept_dns: bool = True
    accept_routes: bool = False
    shields_up: bool = False  # accept no new inbound connections (replies and established flows still pass)

    def routable_ips(self) -> tuple[str, ...]:
        """Hostinfo.RoutableIPs: advertised subnets, plus both defaults when offering an exit node."""
        out = list(self.advertise_routes)
        if self.advertise_exit_node:
            out += [r for r in EXIT_ROUTES if r not in out]
        return tuple(out)

    def forwards(self) -> bool:
        """We forward for peers (exit node or subnet router)."""
        return bool(self.routable_ips())


def canonical_routes(routes: Iterable[str] | str | None) -> tuple[str, ...]:
    """Parse "--advertise-routes" CIDRs (comma-separated text or an iterable); ValueError names the bad one."""
    if routes is None:
        return ()
    items = routes.split(",") if isinstance(routes, str) else list(routes)
    out: list[str] = []
    for r in items:
        r = str(r).strip()
        if not r:
            continue
        try:
            net = ipaddress.ip_network(r, strict=False)
        except ValueError:
            raise ValueError(f"advertise-routes: {r!r} is not a CIDR prefix") from None
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)


def prefs_from_args(args: argparse.Namespace) -> NodePrefs:
    """NodePrefs from parsed flags; attributes missing from ``args`` keep their defaults."""
    d = NodePrefs()
    return NodePrefs(
        exit_node=getattr(args, "exit_node", None) or None,
        exit_node_allow_lan=bool(getattr(args, "exit_node_allow_lan_access", d.exit_node_allow_lan)),
        advertise_exit_node=bool(getattr(args, "advertise_exit_node", d.advertise_exit_node)),
        advertise_routes=canonical_routes(getattr(args, "advertise_routes", None)),
        accept_dns=bool(getattr(args, "accept_dns", d.accept_dns)),
        accept_routes=bool(getattr(args, "accept_routes", d.accept_routes)),
        shields_up=bool(getattr(args, "shields_up", d.shields_up)),
    )


def offers_exit(n: Any) -> bool:
    """A peer is an exit-node option iff its AllowedIPs contain both 0.0.0.0/0 and ::/0."""
    allowed = set(n.effective_allowed_ips())
    return all(r in allowed for r in EXIT_ROUTES)


def resolve_exit_node(nm: NetworkMap | None, spec: str | int | None) -> Any | None:
    """The peer ``spec`` names: an address, a name (first label, FQDN, Hostinfo.Hostname), StableID or node ID."""
    if nm is None or spec is None or spec == "":
        return None
    text = str(spec).strip().lower().rstrip(".")
    try:
        ip = str(ipaddress.ip_address(text))
    except ValueError:
        ip = None
    by_name = None
    for p in nm.sorted_peers():
        if ip is not None:
            if any(a.split("/")[0] == ip for a in p.addresses):
                return p
            continue
        if text.isdigit() and p.id == int(text):
            return p
        if p.stable_id and p.stable_id.lower() == text:
            return p
        fq = (p.name or "").lower().rstrip(".")
        hn = (p.hostinfo.hostname or "").lower() if p.hostinfo is not None else ""
        if by_name is None and text in (fq, fq.split(".")[0], hn):
            by_name = p
    return by_name


# --- our own sockets bypass the exit node -------------------------------------------------

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


NETNS_RUN_DIR = Path("/run/netns")  # where `ip netns add` keeps named namespaces
NETNS_ETC_DIR = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*


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


def default_run_dir() -> Path:
    """/run/meshvpn, or /run/meshvpn/netns-<name> inside a named (`ip netns`) network namespace.

    The journals describe one namespace's rules and files; helpers in different namespaces
    (lab hosts) share /run and must not read, or delete, each other's.
    """
    ns = named_netns()
    return DEFAULT_RUN_DIR if ns is None else DEFAULT_RUN_DIR / f"netns-{ns}"


def os_dns_shared_with_host() -> bool:
    """True if we run in a named network namespace that has no /etc/netns/<name>/resolv.conf of its own.

    Then /etc/resolv.conf is the host's file, and pointing it at quad-100 would break the
    host's DNS (the 100.100.100.100 server lives in our namespace only).
    """
    ns = named_netns()
    return ns is not None and not (NETNS_ETC_DIR / ns / "resolv.conf").exists()


# --- the node ---------------------------------------------------------------------------


class Node:
    """Control client + WireGuard device + router, filter, MagicDNS and exit-node routing for one node.

    Run-time API (call on the node's event loop thread; each applies at once when running
    and is remembered otherwise): ``set_exit_node``, ``set_exit_node_allow_lan``,
    ``set_advertise_exit_node``, ``set_advertise_routes``, ``set_accept_dns``,
    ``set_accept_routes``, ``set_shields_up``, ``set_prefs`` (several at once); read ``prefs``, ``exit_node_options()``,
    ``exit_node_peer``, ``filter``.
    """

    def __init__(self, args: argparse.Namespace, state: NodeState, state_path: Path, log: logging.Logger,
                 device_factory=None, router_factory=None, *, exit_router_factory=None, forwarder_factory=None,
                 dns_factory=None) -> None:
        self.args = args
        self.state = state
        self.state_path = state_path
        self.log = log
        self._device_factory = device_factory
        self._router_factory = router_factory
        self._exit_router_factory = exit_router_factory
        self._forwarder_factory = forwarder_factory
        self._dns_factory = dns_factory
        self.device = None
        self.router = None
        self.exit_router = None  # engine.router.exitnode.ExitRouter (using an exit node)
        self.forwarder = None  # engine.router.nft.Forwarder (offering one / subnet routes)
        self.dns = None  # engine.dns.manager.DNSManager
        self.tun = None  # engine.dataplane.filtertun.FilterTun (None with an injected device)
        self.transport = None  # engine.nodetransport.NodeTransport (magicsock; None with an injected device)
        self.client: ControlClient | None = None
        self.wg_applied: WgConfig | None = None
        self.router_applied: RouterConfig | None = None
        self.reconfigs = 0
        self.peer_upserts = 0
        self.peer_removes = 0
        self._status_path = Path(args.status_file) if getattr(args, "status_file", None) else None
        self._last_status: dict = {}
        self._applied_nm: NetworkMap | None = None  # the netmap the data plane reflects
        self._prefs = prefs_from_args(args)
        self._run_dir = Path(getattr(args, "run_dir", None) or default_run_dir())
        self._opts_applied: ReconfigOptions | None = None
        self._exit_applied: Any = None  # ExitRouteConfig last given to the ExitRouter
        self._forward_applied: Any = None  # ForwardConfig last given to the Forwarder
        self._filter = None
        self._filter_key: tuple | None = None
        self._iface_prefixes: tuple[str, ...] | None = None  # this host's interface prefixes (read by the poll)
        self._dns_key: tuple | None = None
        self.exit_node_peer = None  # the resolved exit node (tailcfg.Node) or None

    @property
    def applied_netmap(self) -> NetworkMap | None:
        """The netmap the WireGuard device and routes currently reflect (None before the first / after logout)."""
        return self._applied_nm

    @property
    def prefs(self) -> NodePrefs:
        return self._prefs

    @property
    def filter(self):
        """The packet filter in force (engine.filter.Filter), None before the data plane is up."""
        return self._filter

    # -- data plane ----------------------------------------------------------------------
    def _open_dataplane(self) -> None:
        from engine.router.exitnode import BYPASS_MARK

        if self._device_factory is not None:
            self.device = self._device_factory()
        else:
            from engine.dataplane.device import Device
            from engine.dataplane.filtertun import FilterTun
            from engine.dataplane.tun_linux import LinuxTun

            raw = LinuxTun.create(self.args.tun, mtu=self.args.mtu, offload=True)
            self.tun = FilterTun(raw)
            self._filter = self.tun.filter  # AllowNone until the first netmap
            self.device = Device(self.args.tun, mtu=self.args.mtu, tun=self.tun, logger=self.log.getChild("wg"),
                                 bind=self.transport.bind if self.transport is not None else None)
        self.device.set_private_key(self.state.node_key.raw)
        self.device.set_listen_port(self.args.port)
        if hasattr(self.device, "set_fwmark"):
            self.device.set_fwmark(BYPASS_MARK)  # WireGuard UDP never enters table 52
        self.device.up()
        if self._router_factory is not None:
            self.router = self._router_factory()
        else:
            from engine.router.linux import LinuxRouter

            self.router = LinuxRouter(self.args.tun, service_addrs=QUAD100_ADDRS, logger=self.log.getChild("router"))
        self.router.up(self.args.mtu)
        self.log.info("data plane up: %s listen port %d, node key %s", self.args.tun, self.device.listen_port,
                      self.state.node_key.public().short())

    def _open_os_routing(self) -> None:
        """ExitRouter and Forwarder, after removing what a crashed earlier run left behind."""
        from engine.router.exitnode import ExitRouter
        from engine.router.nft import Forwarder

        self.exit_router = (self._exit_router_factory() if self._exit_router_factory is not None
                            else ExitRouter(journal_dir=self._run_dir, logger=self.log.getChild("exitnode")))
        self.forwarder = (self._forwarder_factory() if self._forwarder_factory is not None
                          else Forwarder(journal_dir=self._run_dir, logger=self.log.getChild("forward")))
        for what, fn in (("exit routing", self.exit_router.cleanup_leftovers),
                         ("forwarding", self.forwarder.cleanup_leftovers)):
            try:
                done = fn()
                if done:
                    self.log.warning("removed %s leftovers of a previous run: %s", what, done)
            except Exception as e:  # noqa: BLE001 - a start must not fail over a stale rule
                self.log.error("cleaning %s leftovers failed: %s", what, e)
        try:  # quad-100 only via lo / the TUN, tailnet sources only via the TUN (engine/router/inputfw.py)
            from engine.router.inputfw import InputConfig

            getattr(self.forwarder, "set_input", lambda _cfg: None)(InputConfig(self.args.tun))
        except Exception as e:  # noqa: BLE001 - the DNS server's own interface check still applies
            self.log.error("installing the input firewall failed: %s", e)

    def _close_dataplane(self) -> None:
        """Restore everything (OS DNS, exit routing, forwarding, routes, TUN); safe to call twice."""
        if self.dns is not None and self.dns.os_dns is not None:
            with contextlib.suppress(Exception):
                self.dns.os_dns.set(None)
        if self.exit_router is not None:
            with contextlib.suppress(Exception):
                self.exit_router.set(None)
            self._exit_applied = None
        if self.forwarder is not None:
            with contextlib.suppress(Exception):
                self.forwarder.set(None)
            with contextlib.suppress(Exception):
                getattr(self.forwarder, "close", lambda: None)()  # the input firewall too
            self._forward_applied = None
        if self.router is not None:
            with contextlib.suppress(Exception):
                self.router.close()
        if self.device is not None:
            with contextlib.suppress(Exception):
                self.device.close()
        self.log.info("data plane closed; routes, rules, DNS and addresses restored")

    # -- MagicDNS ------------------------------------------------------------------------
    def _make_os_dns(self):
        mode = getattr(self.args, "dns_mode", None) or "auto"
        if mode == "none":
            return None
        if os_dns_shared_with_host():
            self.log.warning("this network namespace shares /etc/resolv.conf with the host: "
                             "not changing OS DNS (create /etc/netns/<ns>/resolv.conf to allow it)")
            return None
        from engine.dns.manager import choose_os_configurator
        from engine.dns.resolvconf_file import ResolvConfFile

        if mode == "resolv.conf":
            return ResolvConfFile(journal_dir=self._run_dir, logger=self.log.getChild("dns"))
        if mode == "resolved":
            from engine.dns.manager import _run
            from engine.dns.resolved import ResolvedConfigurator

            return ResolvedConfigurator(self.args.tun, _run, logger=self.log.getChild("dns"))
        return choose_os_configurator(self.args.tun, journal_dir=self._run_dir, logger=self.log.getChild("dns"))

    async def _start_dns(self, stack: contextlib.AsyncExitStack) -> None:
        """MagicDNS: the quad-100 server (and OS DNS when accept-dns); a failure leaves the node without it."""
        from engine.dns.forwarder import Forwarder as DNSForwarder
        from engine.dns.manager import DNSManager
        from engine.router.exitnode import mark_socket

        try:
            if self._dns_factory is not None:
                dns = self._dns_factory()
            else:
                dns = DNSManager(self._make_os_dns(), forwarder=DNSForwarder(socket_hook=_quiet(mark_socket)),
                                 logger=self.log.getChild("dns"))
            self.dns = await stack.enter_async_context(dns)
        except OSError as e:
            self.dns = None
            self.log.error("MagicDNS unavailable: %s", e)

    def _apply_dns(self, nm: NetworkMap | None, force: bool = False) -> None:
        if self.dns is None:
            return
        if nm is None or nm.self_node is None:
            key = (None, self._prefs.accept_dns)
            if force or key != self._dns_key:
                self.dns.set(None, (), None, accept_dns=False)
            self._dns_key = key
            return
        d = nm.delta
        # The exit node is part of the key: choosing, switching or clearing it (or its Node
        # changing) reconfigures at once; with one that can proxy DNS, default DNS goes to its DoH.
        exit_peer = self.exit_node_peer
        using_exit = bool(self._prefs.exit_node)
        key = (id(nm.self_node), id(nm.dns_config), self._prefs.accept_dns, using_exit,
               id(exit_peer) if exit_peer is not None else None)
        if not force and key == self._dns_key and not d.full and not d.changed and not d.removed:
            return
        self._dns_key = key
        try:
            self.dns.set(nm.self_node, nm.sorted_peers(), nm.dns_config, accept_dns=self._prefs.accept_dns,
                         exit_node=exit_peer, using_exit_node=using_exit)
        except Exception as e:  # noqa: BLE001 - OS DNS trouble must not stop the data plane
            self.log.error("DNS configuration failed: %s", e)

    # -- peerAPI (DNS-over-HTTP for peers using us as exit node) --------------------------
    peerapi = None  # engine.peerapi.server.PeerAPIServer while running
    _peerapi_key: tuple | None = None

    async def _start_peerapi(self, stack: contextlib.AsyncExitStack) -> None:
        """The peerAPI HTTP server (listens once the netmap gives us addresses); answers DNS via MagicDNS."""
        from engine.peerapi import PeerAPICore
        from engine.peerapi.server import PeerAPIServer

        dns = self.dns
        core = PeerAPICore(dns_available=dns is not None, self_name=self.args.hostname or socket.gethostname())
        srv = PeerAPIServer(core, dns.answer if dns is not None else None, logger=self.log.getChild("peerapi"))
        self.peerapi = await stack.enter_async_context(srv)

    def _peerapi_services(self) -> tuple[dict, ...] | None:
        """Hostinfo.Services: peerapi4/peerapi6 ports of the listeners up, and peerapi-dns-proxy with MagicDNS."""
        from engine.peerapi import services

        ports = self.peerapi.ports if self.peerapi is not None else {}
        return services(ports, dns_proxy=self.dns is not None) or None

    def _apply_peerapi(self, nm: NetworkMap | None) -> None:
        """Listen on our tailnet addresses, refresh who may query, announce the ports when they change."""
        srv = self.peerapi
        if srv is None or nm is None or nm.self_node is None:
            return
        from engine.filter import ACCEPT
        from engine.peerapi import access_from_netmap
        from engine.peerapi.access import filter_internet_check

        offering = all(r in self._prefs.routable_ips() for r in EXIT_ROUTES)
        d = nm.delta
        key = (id(nm.self_node), id(self._filter), offering)
        if key != self._peerapi_key or d.full or d.changed or d.removed:
            f = self._filter
            srv.core.set_access(access_from_netmap(
                nm, offering_exit=offering, internet_allowed=filter_internet_check(f, ACCEPT) if f else None))
            self._peerapi_key = key
        addrs = [a.split("/", 1)[0] for a in nm.self_node.addresses]
        if set(addrs) != set(srv.ports):
            srv.set_addresses(addrs)
            self._apply_filter(nm)  # the filter opens the (new) peerAPI ports
        if self.client is not None:
            hi = self.client.opts.hostinfo
            want = self._peerapi_services()
            if hi.services != want:
                self.client.set_hostinfo(dataclasses.replace(hi, services=want))

    # -- packet filter -------------------------------------------------------------------
    def _apply_filter(self, nm: NetworkMap | None) -> None:
        from engine.filter import Filter
        from engine.filter.localnets import local_routes

        if nm is None or nm.self_node is None:
            pf, addrs = None, ()
        else:
            pf, addrs = nm.packet_filter, tuple(nm.self_node.addresses)
            if self._prefs.shields_up:
                pf = ()  # no rules: new inbound connections are dropped, replies still pass
        routes = self._prefs.routable_ips()
        ifaces: tuple[str, ...] = ()
        if pf is not None and self._offers_default_route():
            # offering an exit node: the default routes are local minus the attached subnets ("guest Wi-Fi");
            # read once here, then refreshed off the loop by _watch_endpoints (not on every netmap)
            if self._iface_prefixes is None:
                self._iface_prefixes = self._read_iface_prefixes()
            ifaces = self._iface_prefixes
        # like tailscale, our peerAPI ports are open to every peer whatever the ACL (its access rules apply at L7)
        open_tcp = tuple(sorted((self.peerapi.ports if self.peerapi is not None else {}).items()))
        key = (pf, addrs, routes, ifaces, open_tcp)  # by value: headscale resends the same rules with many updates
        if key == self._filter_key:
            return
        f, errors = Filter.for_netmap(pf, addrs, local_routes(routes, ifaces), prev=self._filter,
                                       open_tcp=open_tcp)
        for e in errors:
            self.log.warning("packet filter: %s", e)
        self._filter_key = key
        self._filter = f
        if self.tun is not None:
            self.tun.set_filter(f)
        self.log.info("packet filter: %s", "allow-none" if pf is None else f"{len(f.matches)} rules")

    def _offers_default_route(self) -> bool:
        return any(ipaddress.ip_network(r).prefixlen == 0 for r in self._prefs.routable_ips())

    def _read_iface_prefixes(self) -> tuple[str, ...]:
        from engine.netif import interface_prefixes

        return interface_prefixes(exclude_ifaces={self.args.tun})

    # -- exit node / forwarding ---------------------------------------------------------
    def _reconfig_options(self, nm: NetworkMap | None) -> ReconfigOptions:
        peer = resolve_exit_node(nm, self._prefs.exit_node)
        if self._prefs.exit_node and nm is not None and peer is None:
            self.log.warning("exit node %r is not in the netmap: internet traffic is blocked", self._prefs.exit_node)
        elif peer is not None and not offers_exit(peer):
            self.log.warning("%s does not offer an exit node (routes not approved?): internet traffic is blocked",
                             peer.name)
        self.exit_node_peer = peer
        return ReconfigOptions(exit_node_id=peer.id if peer is not None else None,
                               accept_routes=self._prefs.accept_routes)

    def _apply_exit_routing(self) -> None:
        """Table 52 + rules while an exit node is chosen and we are logged in (netmap present).

        An exit node that does not resolve (not in the netmap, routes not approved) still gets
        the routes: traffic is blackholed rather than leaked (fail closed). Before the first
        netmap and while logged out there is no exit routing, so an interactive login's browser
        can reach the control server (tailscale installs routes only in the Running state).
        """
        if self.exit_router is None:
            return
        from engine.router.exitnode import ExitRouteConfig

        want = (ExitRouteConfig(self.args.tun, allow_lan=self._prefs.exit_node_allow_lan)
                if self._prefs.exit_node and self._applied_nm is not None else None)
        if want == self._exit_applied:
            return
        self.exit_router.set(want)
        self._exit_applied = want

    def _report_exit_node(self) -> None:
        """Hostinfo.ExitNodeID: the StableID of the exit node in use (tailscale capver 122)."""
        if self.client is None:
            return
        peer = self.exit_node_peer
        want = (peer.stable_id or None) if peer is not None else None
        hi = self.client.opts.hostinfo
        if hi.exit_node_id != want:
            self.client.set_hostinfo(dataclasses.replace(hi, exit_node_id=want))

    def _apply_forwarding(self) -> None:
        if self.forwarder is None:
            return
        from engine.router.nft import ForwardConfig

        want = ForwardConfig(self.args.tun) if self._prefs.forwards() else None
        if want == self._forward_applied:
            return
        self.forwarder.set(want)
        self._forward_applied = want

    # -- run-time preferences -----------------------------------------------------------
    def set_prefs(self, **changes: Any) -> NodePrefs:
        """Change NodePrefs fields (see NodePrefs); applies what changed. ValueError on bad input."""
        if "advertise_routes" in changes:
            changes["advertise_routes"] = canonical_routes(changes["advertise_routes"])
        if "exit_node" in changes:
            v = changes["exit_node"]
            changes["exit_node"] = None if v is None or str(v).strip() == "" else str(v).strip()
        old = self._prefs
        new = dataclasses.replace(old, **changes)
        if new.exit_node and new.advertise_exit_node:
            raise ValueError("cannot advertise an exit node and use an exit node at the same time")
        if new == old:
            return new
        self._prefs = new
        self.log.info("prefs: %s", ", ".join(f"{k}={getattr(new, k)!r}" for k in changes))
        if self.device is None:
            return new  # not running yet: applied at start
        if new.routable_ips() != old.routable_ips():
            self._apply_forwarding()
            if self.client is not None:
                self.client.set_hostinfo(dataclasses.replace(self.client.opts.hostinfo,
                                                             routable_ips=new.routable_ips() or None))
        if (new.exit_node, new.exit_node_allow_lan) != (old.exit_node, old.exit_node_allow_lan):
            self._apply_exit_routing()
        nm = self._applied_nm
        if nm is not None:
            self.apply_netmap(nm, force=True)
        else:
            self._apply_filter(None)
        self.write_status()
        return new

    def set_exit_node(self, node: str | int | None, *, allow_lan: bool | None = None) -> NodePrefs:
        """Use ``node`` (IP, name, StableID or node ID) as exit node; None or "" stops using one."""
        ch: dict[str, Any] = {"exit_node": node}
        if allow_lan is not None:
            ch["exit_node_allow_lan"] = bool(allow_lan)
        return self.set_prefs(**ch)

    def set_exit_node_allow_lan(self, allow: bool) -> NodePrefs:
        return self.set_prefs(exit_node_allow_lan=bool(allow))

    def set_advertise_exit_node(self, on: bool) -> NodePrefs:
        return self.set_prefs(advertise_exit_node=bool(on))

    def set_advertise_routes(self, routes: Iterable[str] | str) -> NodePrefs:
        return self.set_prefs(advertise_routes=routes)

    def set_accept_dns(self, on: bool) -> NodePrefs:
        return self.set_prefs(accept_dns=bool(on))

    def set_accept_routes(self, on: bool) -> NodePrefs:
        return self.set_prefs(accept_routes=bool(on))

    def set_shields_up(self, on: bool) -> NodePrefs:
        return self.set_prefs(shields_up=bool(on))

    def exit_node_options(self) -> list:
        """Peers (tailcfg.Node) that offer an exit node, by node ID."""
        nm = self._applied_nm
        return [p for p in nm.sorted_peers() if offers_exit(p)] if nm is not None else []

    # -- control events ----------------------------------------------------------------------
    def _hostinfo(self) -> Hostinfo:
        return Hostinfo(
            hostname=self.args.hostname or socket.gethostname(),
            os="linux",
            ipn_version=VERSION,
            backend_log_id=self.state.backend_log_id,
            go_arch="amd64",
            routable_ips=self._prefs.routable_ips() or None,
            net_info=NetInfo(preferred_derp=self.transport.home_derp if self.transport is not None
                             else self.args.derp_region),
            services=self._peerapi_services(),
        )

    def on_event(self, ev) -> None:
        if isinstance(ev, NetMapUpdated):
            self.apply_netmap(ev.netmap)
        elif isinstance(ev, StatusChanged):
            s = ev.status
            self.log.info("status: state=%s in_map_poll=%s%s", s.state.value, s.in_map_poll,
                          f" error={s.last_error}" if s.last_error else "")
            if s.state.value in ("logged-out", "needs-login") and self.wg_applied is not None:
                self.clear_dataplane()
            if s.state.value == "authenticated" and self.state.registered_url != self.args.login_server:
                self.state.registered_url = self.args.login_server
                save_state(self.state_path, self.state)
            self.write_status()
        elif isinstance(ev, AuthURL):
            self.log.warning("to authenticate, visit: %s", ev.url)
            self.write_status()
        elif isinstance(ev, NodeKeyRotated):
            self.state.node_key = ev.new_private
            save_state(self.state_path, self.state)
            if self.device is not None:
                self.device.set_private_key(ev.new_private.raw)
            if self.transport is not None:
                self.transport.set_node_key(ev.new_private)
            self.log.info("node key rotated: %s -> %s", ev.old_public.short(), ev.new_private.public().short())
        elif isinstance(ev, LoginFailed):
            self.log.error("login failed: %s", ev.error)

    def apply_netmap(self, nm: NetworkMap, force: bool = False) -> None:
        """Make WireGuard, routes, filter and DNS reflect ``nm`` (``force``: recompute all, prefs changed)."""
        opts = self._reconfig_options(nm)
        full = force or opts != self._opts_applied
        self._opts_applied = opts
        incremental = not full and not nm.self_changed
        new = wg_config(nm, opts, prev=self.wg_applied if incremental else None)
        diff = diff_wg(self.wg_applied, new, hint=nm.delta if incremental and self.wg_applied is not None else None)
        if self.transport is not None and (diff is not NO_CHANGES or nm.derp_map is not None):
            self.transport.update(nm, new)  # before WireGuard: magicsock must know the peers it sends to
        if diff is not NO_CHANGES and self.device is not None:
            self.reconfigs += 1
            for k in diff.remove:
                self.device.remove_peer(k.raw)
                self.peer_removes += 1
            prev_peers = self.wg_applied.peers if self.wg_applied is not None else {}
            for p in diff.upsert:
                ep = self.transport.wg_endpoint(p) if self.transport is not None else p.endpoint
                prev = prev_peers.get(p.public_key)
                if (self.transport is not None and prev is not None and prev.allowed_ips == p.allowed_ips
                        and self.transport.wg_endpoint(prev) == ep):
                    continue  # only candidate endpoints/DERP changed: magicsock has them, WireGuard is unchanged
                self.device.upsert_peer(p.public_key.raw, endpoint=ep, allowed_ips=list(p.allowed_ips),
                                        replace_allowed_ips=True)
                self.peer_upserts += 1
            self.log.info("wg: %d peers (+%d upserted, -%d removed)", len(new.peers), len(diff.upsert),
                          len(diff.remove))
        self.wg_applied = new
        if diff is not NO_CHANGES or nm.self_changed or self.router_applied is None or full:
            rc = router_config(nm, new)  # O(peers): only when WireGuard peers or self changed
            if rc != self.router_applied and self.router is not None:
                self.router.set(rc)
            self.router_applied = rc
        self._apply_filter(nm)
        self._apply_dns(nm, force=force)
        self._apply_peerapi(nm)
        self._applied_nm = nm
        self._apply_exit_routing()
        self._report_exit_node()
        self.write_status()

    def clear_dataplane(self) -> None:
        """Logged out / needs login: drop all peers and routes (the TUN stays), block inbound, restore OS DNS."""
        if self.device is not None and self.wg_applied is not None:
            for k in self.wg_applied.peers:
                self.device.remove_peer(k.raw)
        if self.router is not None:
            self.router.set(RouterConfig(local_addrs=self.router_applied.local_addrs if self.router_applied else ()))
        if self.transport is not None:
            self.transport.update(None, None)  # no peers for magicsock either
        self.wg_applied = None
        self.router_applied = None
        self._opts_applied = None
        self._applied_nm = None
        self.exit_node_peer = None
        self._apply_filter(None)
        self._apply_dns(None)
        self._apply_exit_routing()
        self._report_exit_node()
        self.log.info("data plane cleared (not logged in)")

    def write_status(self) -> None:
        """Write status_doc() to the status file when it changed."""
        if self._status_path is None or self.client is None:
            return
        doc = self.status_doc()
        if doc == self._last_status:
            return
        self._last_status = doc
        write_atomic(self._status_path, json.dumps(doc, indent=1), mode=0o600)

    def status_doc(self) -> dict:
        """Machine-readable engine internals for operators and tests (no secrets): control state, applied prefs,
        counters, filter drops, peers with their paths, magicsock status."""
        if self.client is None:
            return {}
        nm = self._applied_nm
        s = self.client.status
        p = self._prefs
        f = self._filter
        doc = {
            "State": s.state.value,
            "InMapPoll": s.in_map_poll,
            "LastError": s.last_error,
            "AuthURL": s.auth_url,
            "NodeKey": str(self.client.node_key.public()),
            "ListenPort": self.device.listen_port if self.device else 0,
            "Reconfigs": self.reconfigs,
            "PeerUpserts": self.peer_upserts,
            "PeerRemoves": self.peer_removes,
            "StreamsStarted": self.client.streams_started,
            "Prefs": {"ExitNode": p.exit_node, "ExitNodeAllowLANAccess": p.exit_node_allow_lan,
                      "AdvertiseExitNode": p.advertise_exit_node, "AdvertiseRoutes": list(p.advertise_routes),
                      "AcceptDNS": p.accept_dns, "AcceptRoutes": p.accept_routes, "ShieldsUp": p.shields_up},
            "ExitNodeID": self.exit_node_peer.id if self.exit_node_peer is not None else None,
            "MagicDNS": self.dns is not None,
            "Filter": None if f is None else {"Rules": len(f.matches), "AcceptedIn": f.accepted_in,
                                              "Drops": {r.value: n for r, n in f.drops.items() if n}},
            "Self": None,
            "Peers": [],
        }
        if nm is not None and nm.self_node is not None:
            doc["Self"] = {"ID": nm.self_node.id, "Name": nm.self_node.name, "Addresses": list(nm.self_node.addresses),
                           "AllowedIPs": list(nm.self_node.effective_allowed_ips())}
            doc["Peers"] = [
                {"ID": p.id, "Name": p.name, "Key": str(p.key), "Addresses": list(p.addresses),
                 "AllowedIPs": list(p.effective_allowed_ips()), "Endpoints": list(p.endpoints or ()),
                 "DiscoKey": str(p.disco_key) if p.disco_key else None, "HomeDERP": p.effective_home_derp(),
                 "Online": p.online, "ExitNodeOption": offers_exit(p)}
                for p in nm.sorted_peers()
            ]
        if self.transport is not None:  # magicsock: per-peer path (direct ip:port or DERP) and counters
            from engine.nodetransport import path_json

            paths = self.transport.paths()
            for d in doc["Peers"]:
                d["Path"] = path_json(paths.get(bytes.fromhex(d["Key"].split(":", 1)[-1])))
            doc["Magicsock"] = self.transport.status()
        return doc

    async def run(self, stop: asyncio.Event) -> int:
        from engine.router.exitnode import mark_socket

        install_bypass_marking()
        self._open_os_routing()
        await self._open_transport()
        try:
            self._open_dataplane()
        except BaseException:
            await self._close_transport()
            raise
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._start_dns(stack)
                await self._start_peerapi(stack)
                self._apply_forwarding()
                self._apply_filter(None)
                self._apply_dns(None, force=True)
                exclude = {self.args.tun, "lo"}
                eps = local_endpoints(self.device.listen_port, exclude_ifaces=exclude) if self.transport is None else []
                types = tuple(1 for _ in eps)
                if self.transport is not None:  # STUN-mapped + interface addresses of the magicsock port
                    eps, types = self.transport.endpoints()
                opts = ControlOptions(
                    server_url=self.args.login_server,
                    machine_key=self.state.machine_key,
                    node_key=self.state.node_key,
                    disco_public=self.state.disco_key.public(),
                    nl_public=self.state.nl_key.public(),
                    hostinfo=self._hostinfo(),
                    auth_key=self.args.auth_key,
                    registered_before=self.state.registered_url == self.args.login_server,
                    endpoints=tuple(eps),
                    endpoint_types=types,
                    watchdog_timeout=self.args.watchdog,
                    socket_hook=_quiet(mark_socket),  # control connections never enter table 52
                )
                self.client = ControlClient(opts, on_event=self.on_event, logger=self.log.getChild("control"))
                if self.transport is not None:
                    self.transport.attach(self.client)
                self.log.info("joining %s as %s with endpoints %s", self.args.login_server, opts.hostinfo.hostname, eps)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.client.run())
                    tg.create_task(self._watch_endpoints(exclude))  # endpoints without magicsock; exit filter
                    tg.create_task(self._reassert_os_routing())
                    if self._status_path is not None:
                        tg.create_task(self._refresh_status())
                    await stop.wait()
                    if self.args.logout_on_exit:
                        await self.client.logout()
                    await self.client.aclose()  # run() returns; no cancellation to get lost
                    raise _Stop()
        except* _Stop:
            pass
        finally:
            self._close_dataplane()
            await self._close_transport()
        return 0

    async def _open_transport(self) -> None:
        """Magicsock (engine/nodetransport.py) for the real data plane; none with an injected device."""
        if self._device_factory is not None or getattr(self.args, "no_magicsock", False):
            return
        from engine.nodetransport import NodeTransport
        from engine.router.exitnode import BYPASS_MARK

        self.transport = await NodeTransport(self.state.node_key, self.state.disco_key, port=self.args.port,
                                             fwmark=BYPASS_MARK, control_url=self.args.login_server,
                                             logger=self.log.getChild("magicsock")).start()

    async def _close_transport(self) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            with contextlib.suppress(Exception):
                await t.aclose()

    async def _refresh_status(self, interval: float = 1.0) -> None:
        """Counters (filter drops, ...) change without events: rewrite the status file when they do."""
        while True:
            await asyncio.sleep(interval)
            self.write_status()

    async def _reassert_os_routing(self) -> None:
        """Put back exit routing / forwarding another program removed (nft flush ruleset, ip rule flush, networkd)."""
        while True:
            await asyncio.sleep(getattr(self.args, "reassert_interval", REASSERT_INTERVAL))
            for what, applier in (("exit routing", self.exit_router), ("forwarding", self.forwarder)):
                reassert = getattr(applier, "reassert", None)
                if reassert is None:
                    continue
                try:
                    await asyncio.to_thread(reassert)
                except Exception as e:  # noqa: BLE001 - keep watching; the next round retries
                    self.log.error("re-installing %s failed: %s", what, e)

    async def _watch_endpoints(self, exclude: set[str]) -> None:
        """Poll interface addresses: republish endpoints (without magicsock) and rebuild an exit node's filter."""
        while True:
            await asyncio.sleep(self.args.endpoint_interval)
            if self.transport is None:  # magicsock republishes its own endpoints
                eps = await asyncio.to_thread(local_endpoints, self.device.listen_port, exclude_ifaces=exclude)
                if tuple(eps) != self.client.opts.endpoints:
                    self.log.info("endpoints changed: %s", eps)
                    self.client.set_endpoints(eps)
            if self._offers_default_route():
                self._iface_prefixes = await asyncio.to_thread(self._read_iface_prefixes)
                self._apply_filter(self._applied_nm)  # no-op unless the attached subnets changed (key compare)


def _quiet(fn):
    """A socket hook that never raises (SO_MARK needs CAP_NET_ADMIN)."""

    def hook(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            fn(sock)

    return hook


class _Stop(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mesh-helper", description="Headless meshvpn node (tailscaled analogue).")
    p.add_argument("--login-server", required=True, help="control server URL, e.g. https://headscale.example")
    p.add_argument("--auth-key", default=None, metavar="file:PATH",
                   help="pre-auth key as file:PATH (a 0600 file; a literal key is visible in ps), "
                        "or $MESH_AUTH_KEY; without it an AuthURL is logged")
    p.add_argument("--state", required=True, help="state file (created 0600)")
    p.add_argument("--hostname", default=None)
    p.add_argument("--tun", default=DEFAULT_TUN)
    p.add_argument("--port", type=int, default=0, help="UDP listen port (0 = random)")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU)
    p.add_argument("--derp-region", type=int, default=DEFAULT_DERP_REGION, help="NetInfo.PreferredDERP to publish")
    p.add_argument("--watchdog", type=float, default=120.0, help="map-stream watchdog seconds")
    p.add_argument("--endpoint-interval", type=float, default=10.0, help="seconds between endpoint re-scans")
    p.add_argument("--status-file", default=None, help="write a JSON status (no secrets) here on every change")
    p.add_argument("--logout-on-exit", action="store_true")
    g = p.add_argument_group("routing and DNS (tailscale up flags)")
    g.add_argument("--exit-node", default=None, metavar="IP|NAME",
                   help="send internet traffic through this peer (IP, name, StableID or node ID)")
    g.add_argument("--exit-node-allow-lan-access", action="store_true",
                   help="with --exit-node, keep directly connected LANs off the tunnel")
    g.add_argument("--advertise-exit-node", action="store_true",
                   help="offer this node as an exit node (RoutableIPs 0.0.0.0/0, ::/0; forwarding + masquerade)")
    g.add_argument("--advertise-routes", default=None, metavar="CIDRs",
                   help="comma-separated subnet routes to offer to the tailnet")
    g.add_argument("--accept-dns", action=argparse.BooleanOptionalAction, default=True,
                   help="point the OS resolver at MagicDNS (100.100.100.100)")
    g.add_argument("--accept-routes", action=argparse.BooleanOptionalAction, default=False,
                   help="use subnet routes other nodes advertise")
    g.add_argument("--shields-up", action="store_true", help="block incoming connections from the tailnet")
    g.add_argument("--dns-mode", choices=DNS_MODES, default="auto",
                   help="how OS DNS is configured: systemd-resolved when running, else resolv.conf (auto)")
    g.add_argument("--run-dir", default=None,
                   help="directory for journals of OS changes, restored after a crash at the next start "
                        f"(default {DEFAULT_RUN_DIR}, per network namespace)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def check_paths(args: argparse.Namespace) -> str | None:
    """Refuse state/status/journal locations another local user could plant files in or swap (we run as root)."""
    checks = [("--state", args.state, check_file_path), ("--status-file", args.status_file, check_file_path),
              ("--run-dir", args.run_dir or str(default_run_dir()), check_dir)]
    return first_refusal(checks)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        canonical_routes(args.advertise_routes)
    except ValueError as e:
        parser.error(str(e))
    if args.exit_node and args.advertise_exit_node:
        parser.error("--exit-node and --advertise-exit-node cannot be used together")
    try:
        args.auth_key = authkey.resolve(args.auth_key, warn=sys.stderr) or os.environ.get("MESH_AUTH_KEY") or None
    except authkey.AuthKeyError as e:
        parser.error(str(e))
    problem = check_paths(args)
    if problem:
        parser.error(problem)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("hpack", "h2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("mesh-helper")
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.geteuid() != 0:
        log.warning("not running as root: creating the TUN device will probably fail")
    # a journal another user could have planted is moved aside before the subsystems' cleanups read it
    from engine.leftovers import vet_journal_dir

    vet_journal_dir(args.run_dir or default_run_dir(), log)
    state_path = Path(args.state)
    old_umask = os.umask(0o077)
    try:
        state = load_state(state_path, log)
    finally:
        os.umask(old_umask)
    node = Node(args, state, state_path, log)

    async def amain() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        rc = await node.run(stop)
        log.info("stopped after %.1fs", time.monotonic() - t0)
        return rc

    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
