"""TailnetEngine: the backend's NodeEngine: the control client + a UserspaceEngine built from System + EngineOptions.

    Backend ──start(cfg, keys, sink)──► TailnetEngine ──► ControlClient (login, map, hostinfo, endpoints)
                                           │  netmaps + prefs (EngineConfig) + the resolved exit node
                                           └──────► UserspaceEngine.reconfig  (engine/wgengine/)
    control events (StatusChanged/AuthURL/NetMapUpdated/NodeKeyRotated/...) ──► engine_api events ──► Backend

Keys come from the backend (GUI keyring or the helper's state file) and are never written here; a
node key rotated by control is reported as engine_api.NodeKeyRotated (the backend persists it);
registration state is kept in memory. Paths come from magicsock: Status CurAddr = the direct path
in use, ping type "disco" = a disco ping, netcheck = magicsock's netcheck; other ping types send an
ICMP echo through the tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.control.client import (
    AuthURL as CAuthURL,
    ControlClient,
    ControlOptions,
    LoginFailed,
    NetMapUpdated,
    NodeKeyRotated as CNodeKeyRotated,
    StatusChanged,
)
from engine.ipn.dnsquery import build_query, resolver_view
from engine.ipn.engine_api import (
    AuthURL,
    DNSOSView,
    DNSQueryOutcome,
    DNSUnavailable,
    EngineConfig,
    EngineFailed,
    EngineSnapshot,
    EngineUp,
    EventSink,
    LoggedIn,
    LoginNeeded,
    NetMapUpdate,
    NodeKeyRotated,
    NodeKeys,
    PingOutcome,
    UserView,
)
from engine.ipn.exitnode import ident_of_node, resolve_exit_node
from engine.ipn.netmapview import netmap_view
from engine.ipn.pinger import PingFailed, disco_ping, icmp_rtt
from engine.net.tsaddr import canonical_routes
from engine.recovery.journal import Journal
from engine.system import System, quiet
from engine.tailcfg import Hostinfo, NetInfo
from engine.types.keys import DiscoPrivate, NLPrivate
from engine.wgengine.debugdoc import ordered
from engine.wgengine.options import EngineOptions
from engine.wgengine.prefs import exit_spec, prefs_problem, routable_ips
from engine.wgengine.userspace import UserspaceEngine

HOSTINFO_VERSION = "0.1.0"  # Hostinfo.IPNVersion sent to control
STOP_GRACE = 10.0  # seconds the session gets to stop by itself before we cancel it


@dataclass(eq=False)
class _Session:
    """One start..stop: the prefs in force, the engine, the control client and the task running them."""

    cfg: EngineConfig
    keys: NodeKeys
    engine: UserspaceEngine
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    client: ControlClient | None = None
    nm: Any = None  # the latest netmap from control (None before the first / after logout)
    task: asyncio.Task | None = None


class TailnetEngine:
    """engine_api.NodeEngine: owns the control client and one UserspaceEngine per session (see module doc)."""

    def __init__(
        self,
        options: EngineOptions = EngineOptions(),
        system: System | None = None,
        *,
        journal: Journal | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.journal = journal  # the helper's journal of OS changes: routing and DNS record in it
        self.options = options
        self.system = system if system is not None else System.linux()
        self.tun_name = options.tun_name
        self.log = logger or logging.getLogger("meshvpn.engine")
        self.registered_url: str | None = None  # control URL we registered with (this process)
        self._s: _Session | None = None
        self._sink: EventSink = lambda ev: None
        self._up_sent = False
        self._disco = DiscoPrivate.generate()
        self._nl = NLPrivate.generate()
        self._log_id = uuid.uuid4().hex + uuid.uuid4().hex

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, cfg: EngineConfig, keys: NodeKeys, sink: EventSink) -> None:
        await self.stop()
        self._sink = sink
        self._up_sent = False
        engine = UserspaceEngine(
            self.options,
            self.system,
            keys.node,
            self._disco,
            self.log,
            control_url=cfg.control_url,
            hostname=cfg.hostname,
            journal=self.journal,
        )
        s = _Session(cfg, keys, engine)
        self._s = s
        s.task = asyncio.get_running_loop().create_task(self._run(s), name="tailnet-engine")

    async def _run(self, s: _Session) -> int:
        failure: Exception | None = None
        try:
            try:
                canonical_routes(s.cfg.advertise_routes)
            except ValueError as e:
                raise RuntimeError(f"cannot apply prefs: {e}") from None
            await s.engine.start()
            self._reconfig(s)  # forwarding and the packet filter from prefs, before the first netmap
            await self._run_control(s)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported to the backend, not raised into the loop
            self.log.exception("engine failed")
            failure = e
        finally:
            await s.engine.aclose()  # restores the system first, so a cancellation cannot skip that
        if failure is not None:
            self._sink(EngineFailed(f"engine failed: {failure}"))
            return 1
        return 0

    async def _run_control(self, s: _Session) -> None:
        """Log in and follow the map stream until asked to stop."""
        eps, types = s.engine.endpoints()
        opts = ControlOptions(
            server_url=s.cfg.control_url,
            machine_key=s.keys.machine,
            node_key=s.keys.node,
            disco_public=self._disco.public(),
            nl_public=self._nl.public(),
            hostinfo=self._hostinfo(s),
            auth_key=s.cfg.auth_key or None,
            registered_before=self.registered_url == s.cfg.control_url,
            endpoints=tuple(eps),
            endpoint_types=types,
            watchdog_timeout=self.options.map_watchdog,
            socket_hook=quiet(self.system.mark_socket),  # control connections never enter table 52
        )
        s.client = ControlClient(
            opts, on_event=lambda ev: self._on_control_event(s, ev), logger=self.log.getChild("control")
        )
        s.engine.attach_control(s.client)
        self.log.info("joining %s as %s with endpoints %s", s.cfg.control_url, opts.hostinfo.hostname, list(eps))
        loop = asyncio.get_running_loop()
        run = loop.create_task(s.client.run(), name="control-client")
        stopper = loop.create_task(s.stop.wait(), name="tailnet-engine-stop")
        try:
            done, _ = await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if run in done:
                run.result()  # raises what the control client raised
                await stopper  # it returned by itself: keep the data plane until asked to stop
            await s.client.aclose()  # run() returns; no cancellation to get lost
            await run
        finally:
            stopper.cancel()
            if not run.done():  # we were cancelled (stop escalation)
                run.cancel()
            s.engine.detach_control()

    async def stop(self) -> None:
        """Ask the session to stop (the engine restores routes and closes the TUN); escalate if it does not."""
        s = self._s
        if s is None or s.task is None:
            return
        s.stop.set()  # the control client stops with aclose(): no cancellation involved
        done, _ = await asyncio.wait({s.task}, timeout=STOP_GRACE)
        if not done:  # a bug elsewhere (DNS, data plane): last resort
            self.log.error("engine did not stop within %.0fs; cancelling it", STOP_GRACE)
            s.task.cancel()
            done, _ = await asyncio.wait({s.task}, timeout=2.0)
        if not done:
            self.log.error("engine did not stop; restoring the data plane directly")
            s.engine.restore_system()
        else:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                s.task.result()
        if self._s is s:
            self._s = None

    async def aclose(self) -> None:
        await self.stop()

    # -- control events -------------------------------------------------------------------------
    def _on_control_event(self, s: _Session, ev: Any) -> None:
        if s is not self._s:
            return  # a stopped session's late event
        sink = self._sink
        if isinstance(ev, NetMapUpdated):
            s.nm = ev.netmap
            self._reconfig(s)
            self._on_netmap(s)
        elif isinstance(ev, StatusChanged):
            st = ev.status
            state = st.state.value
            self.log.info(
                "status: state=%s in_map_poll=%s%s",
                state,
                st.in_map_poll,
                f" error={st.last_error}" if st.last_error else "",
            )
            if state in ("logged-out", "needs-login") and s.engine.applied_netmap is not None:
                s.nm = None
                self._reconfig(s)
            if state == "authenticated":
                self.registered_url = s.cfg.control_url
                sink(LoggedIn(UserView(id=self._user_id(s), login_name=st.login_name or "")))
            elif state in ("needs-login", "logged-out"):
                sink(LoginNeeded(st.last_error or state))
        elif isinstance(ev, CAuthURL):
            self.log.warning("to authenticate, visit: %s", ev.url)
            sink(AuthURL(ev.url))
        elif isinstance(ev, CNodeKeyRotated):
            s.keys = NodeKeys(s.keys.machine, ev.new_private, source=s.keys.source)
            s.engine.set_node_key(ev.new_private)
            self.log.info(
                "node key rotated by control: %s -> %s", ev.old_public.short(), ev.new_private.public().short()
            )
            # The backend keeps it beyond this run (GUI keyring via the IPN bus, or the state file).
            sink(NodeKeyRotated(ev.old_public, ev.new_private))
        elif isinstance(ev, LoginFailed):
            self.log.error("login failed: %s", ev.error)
            sink(LoginNeeded(ev.error))

    def _reconfig(self, s: _Session) -> None:
        """Feed the netmap, prefs and the resolved exit node to the engine; tell control what changed."""
        nm = s.nm
        peer = resolve_exit_node(exit_spec(s.cfg), nm.sorted_peers(), ident_of_node) if nm is not None else None
        s.engine.reconfig(nm, s.cfg, exit_node=peer)
        self._sync_hostinfo(s)

    def _hostinfo(self, s: _Session) -> Hostinfo:
        e = s.engine
        peer = e.exit_node_peer
        return Hostinfo(
            hostname=s.cfg.hostname or self.system.hostname(),
            os="linux",
            ipn_version=HOSTINFO_VERSION,
            backend_log_id=self._log_id,
            go_arch="amd64",
            routable_ips=routable_ips(s.cfg) or None,
            net_info=NetInfo(preferred_derp=e.home_derp if e.has_magicsock else self.options.derp_region),
            services=e.peerapi_services(),
            exit_node_id=(peer.stable_id or None) if peer is not None else None,
        )

    def _sync_hostinfo(self, s: _Session) -> None:
        """Hostname, RoutableIPs, peerAPI services and ExitNodeID (capver 122) as the engine now has them."""
        if s.client is None:
            return
        hi = s.client.opts.hostinfo
        new = self._hostinfo(s)
        want = dataclasses.replace(
            hi,
            hostname=new.hostname,
            routable_ips=new.routable_ips,
            services=new.services,
            exit_node_id=new.exit_node_id,
        )
        if want != hi:
            s.client.set_hostinfo(want)

    def _user_id(self, s: _Session) -> int:
        nm = s.engine.applied_netmap
        return nm.self_node.user if nm is not None and nm.self_node is not None else 0

    def _view(self, s: _Session, *, live: bool = True) -> Any:
        e = s.engine
        if not live:
            return netmap_view(e.applied_netmap, {}, self.system.clock())
        return netmap_view(e.applied_netmap, e.peer_stats(), self.system.clock(), e.paths())

    def _on_netmap(self, s: _Session) -> None:
        view = self._view(s)
        if view is None:
            return
        self._sink(NetMapUpdate(view))
        if not self._up_sent:
            self._up_sent = True
            self._sink(EngineUp())

    # -- backend requests -----------------------------------------------------------------------
    async def reconfigure(self, cfg: EngineConfig) -> None:
        """Prefs changed while running: exit node, routes, DNS, shields-up, hostname."""
        s = self._s
        if s is None:
            return
        problem = prefs_problem(cfg)
        if problem:
            self._sink(EngineFailed(f"cannot apply prefs: {problem}"))
            return
        s.cfg = dataclasses.replace(cfg, auth_key=s.cfg.auth_key)
        if s.engine.running:
            self._reconfig(s)
        else:
            s.engine.reconfig(None, s.cfg)  # remembered; applied once the engine runs

    async def login_interactive(self) -> None:
        client = self._s.client if self._s is not None else None
        if client is None:
            return
        if client.status.state.value not in ("needs-login", "logged-out"):
            # A login is under way (its AuthURL event comes anyway) or done; forced re-auth of a
            # logged-in node (`tailscale up --force-reauth`) is not supported yet.
            return
        client.login()

    async def logout(self) -> None:
        if self._s is not None and self._s.client is not None:
            await self._s.client.logout()
        self.registered_url = None
        await self.stop()

    def status(self) -> EngineSnapshot:
        s = self._s
        if s is None:
            return EngineSnapshot()
        health = ()
        if s.client is not None and s.client.status.last_error:
            health = (s.client.status.last_error,)
        return EngineSnapshot(netmap=self._view(s), health=health, tun=s.engine.tun_up)

    async def ping(self, ip: str, kind: str, size: int) -> PingOutcome:
        """A disco ping over magicsock, or an ICMP echo through the tunnel reported with the path in use."""
        s = self._s
        view = self._view(s) if s is not None else None
        peer = next((p for p in view.peers if ip in p.addresses), None) if view is not None else None
        if s is None or peer is None:
            return PingOutcome(err="no matching peer")
        name = peer.name.split(".")[0]
        if kind.lower() == "disco" and s.engine.has_magicsock:
            return await disco_ping(s.engine, peer, ip, name)
        try:
            rtt = await icmp_rtt(ip)
        except PingFailed as e:
            return PingOutcome(node_ip=ip, node_name=name, err=str(e))
        peer = next((p for p in (self._view(s) or view).peers if ip in p.addresses), peer)
        return PingOutcome(node_ip=ip, node_name=name, latency_seconds=rtt, endpoint=peer.cur_addr)

    async def netcheck(self) -> dict[str, Any]:
        """magicsock's netcheck (STUN to every DERP region) once the node carries a magicsock."""
        s = self._s
        if s is None or not s.engine.has_magicsock:
            raise NotImplementedError("the node has no magicsock (netcheck) yet")
        rep = await s.engine.netcheck()
        view = self._view(s, live=False)
        if view is not None:
            rep.setdefault("RegionCodes", {str(k): v for k, v in view.derp_regions.items()})
        return rep

    def _dns(self) -> Any:
        dns = self._s.engine.dns if self._s is not None else None
        if dns is None:
            raise DNSUnavailable(
                "MagicDNS is not running in the engine" if self._s is not None else "the engine is not running"
            )
        return dns

    def dns_os_config(self) -> DNSOSView:
        """What engine.dns.manager.DNSManager last told the OS (resolv.conf or systemd-resolved)."""
        dns = self._dns()
        base = tuple(dns.base_nameservers())
        os_cfg = dns.os_config()
        if os_cfg is None:
            return DNSOSView(base_nameservers=base)
        return DNSOSView(
            applied=True,
            nameservers=tuple(os_cfg.nameservers),
            search_domains=tuple(os_cfg.search_domains),
            match_domains=tuple(os_cfg.match_domains),
            route_all=os_cfg.route_all,
            base_nameservers=base,
        )

    async def dns_query(self, name: str, qtype: int) -> DNSQueryOutcome:
        """The node's quad-100 answer (forwarded to the DNS config's upstreams or the exit node's DoH)."""
        dns = self._dns()
        ups = dns.upstreams_for(name)
        reply = await dns.answer(build_query(name, qtype))
        if reply is None:
            raise DNSUnavailable("MagicDNS dropped the query")
        return DNSQueryOutcome(reply=reply, resolvers=tuple(resolver_view(u) for u in ups))

    def debug_status(self) -> dict[str, Any]:
        """The running node's internals (control state, counters, filter drops, peers with paths); {} when stopped.

        The engine's part comes from UserspaceEngine.debug_doc, the control client's is added here.
        """
        s = self._s
        if s is None or s.client is None:
            return {}
        st = s.client.status
        doc = s.engine.debug_doc()
        doc.update(
            {
                "State": st.state.value,
                "InMapPoll": st.in_map_poll,
                "LastError": st.last_error,
                "AuthURL": st.auth_url,
                "NodeKey": str(s.client.node_key.public()),
                "StreamsStarted": s.client.streams_started,
            }
        )
        return ordered(doc)
