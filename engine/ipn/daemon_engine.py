"""DaemonEngine: the NodeEngine adapter over engine/daemon.py's headless Node (control client + WG device + router).

    Backend ──start(cfg, keys)──► DaemonEngine ──► daemon.Node(args, NodeState(keys…)).run(stop)
    control events (StatusChanged/AuthURL/NetMapUpdated/...) ──► engine_api events ──► Backend

Differences from the headless `mesh-helper --state` runner: keys come from the backend (GUI keyring or
the helper's state file) and are never written by this adapter; a node key rotated by control is
reported as engine_api.NodeKeyRotated (the backend persists it); registration state is kept in memory.
Prefs (exit node, allow-LAN, accept DNS/routes, advertised routes / exit node, shields-up) go into the Node at
start and through ``Node.set_prefs`` on ``reconfigure``. Paths come from the node's magicsock
(engine/nodetransport.py): Status CurAddr = the direct path in use, ping type "disco" = a disco ping
(via DERP(region) or via ip:port), netcheck = magicsock's netcheck; other ping types send an ICMP echo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Any

from engine.control.client import AuthURL as CAuthURL
from engine.control.client import LoginFailed, NetMapUpdated, StatusChanged
from engine.control.client import NodeKeyRotated as CNodeKeyRotated
from engine.daemon import Node, NodeState
from engine.hygiene import Journal
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
    NetMapView,
    NodeKeyRotated,
    NodeKeys,
    PeerView,
    PingOutcome,
    UserView,
)
from engine.keys import DiscoPrivate, NLPrivate
from engine.wgengine.options import EngineOptions

PING_WAIT = 3.0  # seconds one ICMP echo may take
_RTT_RE = re.compile(r"= [\d.]+/([\d.]+)/")  # iputils summary: rtt min/avg/max/mdev = a/b/c/d ms
STOP_GRACE = 10.0  # seconds the node gets to stop by itself before we cancel it
ACTIVE_WINDOW = 120.0  # seconds since the last handshake that count as "active" (tailscale: 2 min)
EXIT_ROUTES = ("0.0.0.0/0", "::/0")


def _addr(prefix: str) -> str:
    return prefix.split("/")[0]


def netmap_view(nm: Any, stats: dict[str, Any], now: float, paths: dict[str, Any] | None = None) -> NetMapView | None:
    """engine.netmap.NetworkMap (+ WireGuard per-peer stats, magicsock PathStatus by nodekey text) -> NetMapView (pure).

    With ``paths`` (a magicsock node), CurAddr is the direct path in use ("" while on DERP);
    without, the WireGuard endpoint once a handshake happened."""
    if nm is None or nm.self_node is None:
        return None
    regions: dict[int, str] = {}
    if nm.derp_map is not None and nm.derp_map.regions:
        regions = {int(rid): r.region_code for rid, r in nm.derp_map.regions.items()}

    def view(n: Any, is_self: bool) -> PeerView:
        hi = n.hostinfo
        key = str(n.key)
        st = stats.get(key)
        ep = ""
        lh = 0.0
        rx = tx = 0
        if st is not None:
            lh = float(st.last_handshake or 0.0)
            rx, tx = st.rx_bytes, st.tx_bytes
            if st.endpoint is not None and lh:
                ep = str(st.endpoint)
        if paths is not None:
            ps = paths.get(key)
            ep = ps.addr if ps is not None and ps.path == "direct" else ""
        derp = n.effective_home_derp()
        return PeerView(
            node_id=n.id, stable_id=n.stable_id, node_key=key, name=n.name,
            hostname=(hi.hostname if hi and hi.hostname else n.name.split(".")[0]),
            os=(hi.os if hi and hi.os else ""), user_id=n.user,
            addresses=tuple(_addr(a) for a in n.addresses),
            allowed_ips=tuple(n.effective_allowed_ips()),
            primary_routes=tuple(n.primary_routes or ()), tags=tuple(n.tags or ()),
            online=bool(n.online) if n.online is not None else (is_self or bool(lh)),
            last_seen=n.last_seen or "", key_expiry=n.key_expiry or "", expired=bool(n.expired),
            created=n.created or "", endpoints=tuple(n.endpoints or ()), home_derp=derp,
            cur_addr=ep, relay=regions.get(derp, ""), rx_bytes=rx, tx_bytes=tx, last_handshake=lh,
            active=bool(lh and now - lh < ACTIVE_WINDOW),
        )

    users = tuple(UserView(id=u.id, login_name=u.login_name, display_name=u.display_name,
                           profile_pic_url=u.profile_pic_url or "") for u in nm.user_profiles.values())
    self_name = nm.self_node.name.rstrip(".")
    suffix = self_name.split(".", 1)[1] if "." in self_name else ""
    return NetMapView(
        self_node=view(nm.self_node, True), peers=tuple(view(p, False) for p in nm.sorted_peers()), users=users,
        domain=nm.domain, magic_dns_suffix=suffix,
        magic_dns_enabled=bool(nm.dns_config is not None and getattr(nm.dns_config, "proxied", False)),
        derp_regions=regions, derp_map=_derp_map_json(nm.derp_map), dns_config=_dns_config_json(nm.dns_config),
    )


def _dns_config_json(dc: Any) -> dict[str, Any] | None:
    """tailcfg.DNSConfig as JSON (NetworkMap.DNS in the IPN bus netmap, read by `tailscale dns status`)."""
    if dc is None:
        return None
    try:
        from engine.tailcfg import encode

        out = encode(dc)
    except Exception:  # noqa: BLE001 - a display nicety; never break status over it
        return None
    return out if isinstance(out, dict) else None


def _derp_map_json(dm: Any) -> dict[str, Any] | None:
    if dm is None:
        return None
    try:
        from engine.tailcfg import encode

        return encode(dm)
    except Exception:  # noqa: BLE001 - a display nicety; never break status over it
        return None


def node_prefs_args(cfg: EngineConfig) -> dict[str, Any]:
    """daemon.Node's preference flags from the backend's EngineConfig (pure)."""
    routes = [r for r in cfg.advertise_routes if r not in EXIT_ROUTES]
    return {
        "exit_node": cfg.exit_node_id or cfg.exit_node_ip or None,
        "exit_node_allow_lan_access": cfg.exit_node_allow_lan_access,
        "advertise_exit_node": all(r in cfg.advertise_routes for r in EXIT_ROUTES),
        "advertise_routes": ",".join(routes) or None,
        "accept_dns": cfg.corp_dns,
        "accept_routes": cfg.route_all,
        "shields_up": cfg.shields_up,
    }


async def _disco_ping(transport: Any, peer: PeerView, ip: str, name: str) -> PingOutcome:
    """`tailscale ping` over magicsock: answered via DERP(region) until a direct path answers."""
    from engine.keys import NodePublic

    try:
        r = await transport.ping(NodePublic.from_text(peer.node_key).raw, PING_WAIT)
    except KeyError:
        return PingOutcome(node_ip=ip, node_name=name, err="peer has no disco key")
    except asyncio.TimeoutError:
        return PingOutcome(node_ip=ip, node_name=name, err="timeout")
    return PingOutcome(node_ip=ip, node_name=name, latency_seconds=r.latency, endpoint=r.endpoint,
                       derp_region_id=r.derp_region, derp_region_code=r.derp_code)


class _BackendNode(Node):
    """daemon.Node whose events go to the backend and which never writes a state file."""

    def __init__(self, engine: "DaemonEngine", args: argparse.Namespace, state: NodeState, log: logging.Logger) -> None:
        super().__init__(args, state, state_path=None, log=log)  # type: ignore[arg-type]
        self._engine = engine

    def on_event(self, ev: Any) -> None:
        sink = self._engine._sink
        if isinstance(ev, NetMapUpdated):
            self.apply_netmap(ev.netmap)
            self._engine._on_netmap()
        elif isinstance(ev, StatusChanged):
            s = ev.status
            state = s.state.value
            if state in ("logged-out", "needs-login") and self.wg_applied is not None:
                self.clear_dataplane()
            if state == "authenticated":
                self._engine.registered_url = self.args.login_server
                sink(LoggedIn(UserView(id=self._engine._user_id(), login_name=s.login_name or "")))
            elif state in ("needs-login", "logged-out"):
                sink(LoginNeeded(s.last_error or state))
        elif isinstance(ev, CAuthURL):
            sink(AuthURL(ev.url))
        elif isinstance(ev, CNodeKeyRotated):
            self.state.node_key = ev.new_private
            if self.device is not None:
                self.device.set_private_key(ev.new_private.raw)
            if self.transport is not None:
                self.transport.set_node_key(ev.new_private)
            self.log.info("node key rotated by control: %s -> %s", ev.old_public.short(), ev.new_private.public().short())
            # The backend keeps it beyond this run (GUI keyring via the IPN bus, or the state file).
            sink(NodeKeyRotated(ev.old_public, ev.new_private))
        elif isinstance(ev, LoginFailed):
            sink(LoginNeeded(ev.error))


class DaemonEngine:
    """engine_api.NodeEngine over daemon.Node."""

    def __init__(self, options: EngineOptions = EngineOptions(), *, journal: Journal | None = None,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.journal = journal  # TODO(router/dns owners): record system changes here (see engine/hygiene.py)
        self.options = options
        self.tun_name = options.tun_name
        self.log = logger or logging.getLogger("meshvpn.engine")
        self.registered_url: str | None = None
        self._node: _BackendNode | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[int] | None = None
        self._sink: EventSink = lambda ev: None
        self._up_sent = False
        self._disco = DiscoPrivate.generate()
        self._nl = NLPrivate.generate()
        self._log_id = uuid.uuid4().hex + uuid.uuid4().hex

    def _user_id(self) -> int:
        nm = self._node._applied_nm if self._node is not None else None
        return nm.self_node.user if nm is not None and nm.self_node is not None else 0

    def _on_netmap(self) -> None:
        view = netmap_view(self._node._applied_nm if self._node else None, self._stats(), time.time(), self._paths())
        if view is None:
            return
        # LoggedIn again with the real user id now that profiles are known
        self._sink(NetMapUpdate(view))
        if not self._up_sent:
            self._up_sent = True
            self._sink(EngineUp())

    def _stats(self) -> dict[str, Any]:
        dev = self._node.device if self._node is not None else None
        if dev is None:
            return {}
        from engine.keys import NodePublic

        return {str(NodePublic(p.public_key)): p for p in dev.peers()}

    def _paths(self) -> dict[str, Any] | None:
        """magicsock's per-peer PathStatus by nodekey text; None for a node without magicsock."""
        t = getattr(self._node, "transport", None) if self._node is not None else None
        if t is None:
            return None
        from engine.keys import NodePublic

        return {str(NodePublic(k)): ps for k, ps in t.paths().items()}

    async def start(self, cfg: EngineConfig, keys: NodeKeys, sink: EventSink) -> None:
        await self.stop()
        self._sink = sink
        self._up_sent = False
        o = self.options
        args = argparse.Namespace(
            login_server=cfg.control_url, auth_key=cfg.auth_key or None, state=None,
            hostname=cfg.hostname or None, tun=cfg.tun_name or o.tun_name, port=o.listen_port, mtu=o.mtu,
            derp_region=o.derp_region, watchdog=o.map_watchdog, endpoint_interval=o.endpoint_interval,
            status_file=None, logout_on_exit=False, verbose=False, run_dir=str(o.run_dir), dns_mode=o.dns_mode,
            **node_prefs_args(cfg),
        )
        state = NodeState(keys.machine, keys.node, self._disco, self._nl, self._log_id, self.registered_url)
        self._node = _BackendNode(self, args, state, self.log)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._node, self._stop), name="daemon-node")

    async def _run(self, node: _BackendNode, stop: asyncio.Event) -> int:
        try:
            return await node.run(stop)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported to the backend, not raised into the loop
            self.log.exception("engine failed")
            self._sink(EngineFailed(f"engine failed: {e}"))
            return 1

    async def reconfigure(self, cfg: EngineConfig) -> None:
        """Prefs changed while running: exit node, routes, DNS, hostname."""
        node = self._node
        if node is None:
            return
        a = node_prefs_args(cfg)
        try:
            node.set_prefs(exit_node=a["exit_node"], exit_node_allow_lan=a["exit_node_allow_lan_access"],
                           advertise_exit_node=a["advertise_exit_node"], advertise_routes=a["advertise_routes"],
                           accept_dns=a["accept_dns"], accept_routes=a["accept_routes"],
                           shields_up=a["shields_up"])
        except ValueError as e:
            self._sink(EngineFailed(f"cannot apply prefs: {e}"))
            return
        want_host = cfg.hostname or None
        if node.client is not None and want_host != node.args.hostname:
            node.args.hostname = want_host
            node.client.set_hostinfo(node._hostinfo())

    async def stop(self) -> None:
        """Ask the node to stop (it restores routes and closes the TUN); escalate if it does not."""
        if self._task is None:
            return
        assert self._stop is not None
        node, task = self._node, self._task
        self._stop.set()  # Node.run stops its control client with aclose(): no cancellation involved
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE)
        if not done:  # a bug elsewhere (DNS, data plane): last resort
            self.log.error("engine did not stop within %.0fs; cancelling it", STOP_GRACE)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            self.log.error("engine did not stop; restoring the data plane directly")
            if node is not None:
                node._close_dataplane()
        else:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        self._task = None
        self._node = None

    async def login_interactive(self) -> None:
        client = self._node.client if self._node is not None else None
        if client is None:
            return
        if client.status.state.value not in ("needs-login", "logged-out"):
            # A login is under way (its AuthURL event comes anyway) or done; forced re-auth of a
            # logged-in node (`tailscale up --force-reauth`) is not supported yet.
            return
        client.login()

    async def logout(self) -> None:
        if self._node is not None and self._node.client is not None:
            await self._node.client.logout()
        self.registered_url = None
        await self.stop()

    def status(self) -> EngineSnapshot:
        node = self._node
        if node is None:
            return EngineSnapshot()
        view = netmap_view(node._applied_nm, self._stats(), time.time(), self._paths())
        health = ()
        if node.client is not None and node.client.status.last_error:
            health = (node.client.status.last_error,)
        return EngineSnapshot(netmap=view, health=health, tun=node.device is not None)

    async def ping(self, ip: str, kind: str, size: int) -> PingOutcome:
        """An ICMP echo through the tunnel (the node has no disco yet), reported with the WireGuard endpoint."""
        node = self._node
        view = netmap_view(node._applied_nm, self._stats(), time.time(), self._paths()) if node is not None else None
        peer = next((p for p in view.peers if ip in p.addresses), None) if view is not None else None
        if peer is None:
            return PingOutcome(err="no matching peer")
        name = peer.name.split(".")[0]
        transport = getattr(node, "transport", None)
        if kind.lower() == "disco" and transport is not None:
            return await _disco_ping(transport, peer, ip, name)
        argv = ["ping", "-n", "-q", "-c", "1", "-W", str(int(PING_WAIT)), ip]
        if ":" in ip:
            argv.insert(1, "-6")
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            async with asyncio.timeout(PING_WAIT + 2):
                out, _ = await proc.communicate()
        except (OSError, asyncio.TimeoutError) as e:
            return PingOutcome(node_ip=ip, node_name=name, err=f"ping failed: {e}")
        m = _RTT_RE.search(out.decode(errors="replace"))
        if proc.returncode != 0 or m is None:
            return PingOutcome(node_ip=ip, node_name=name, err="timeout")
        peer = next((p for p in (netmap_view(node._applied_nm, self._stats(), time.time(), self._paths()) or view).peers
                     if ip in p.addresses), peer)
        return PingOutcome(node_ip=ip, node_name=name, latency_seconds=float(m.group(1)) / 1000.0,
                           endpoint=peer.cur_addr)

    async def netcheck(self) -> dict[str, Any]:
        """magicsock's netcheck (STUN to every DERP region) once the node carries a magicsock."""
        node = self._node
        transport = getattr(node, "transport", None) if node is not None else None
        if transport is None:
            raise NotImplementedError("the node has no magicsock (netcheck) yet")
        rep = await transport.netcheck()
        view = netmap_view(node._applied_nm, {}, time.time()) if node is not None else None
        if view is not None:
            rep.setdefault("RegionCodes", {str(k): v for k, v in view.derp_regions.items()})
        return rep

    def _dns(self) -> Any:
        dns = getattr(self._node, "dns", None) if self._node is not None else None
        if dns is None:
            raise DNSUnavailable("MagicDNS is not running in the engine" if self._node is not None
                                 else "the engine is not running")
        return dns

    def dns_os_config(self) -> DNSOSView:
        """What engine.dns.manager.DNSManager last told the OS (resolv.conf or systemd-resolved)."""
        dns = self._dns()
        base = tuple(dns.base_nameservers())
        os_cfg = dns.os_config()
        if os_cfg is None:
            return DNSOSView(base_nameservers=base)
        return DNSOSView(applied=True, nameservers=tuple(os_cfg.nameservers), search_domains=tuple(os_cfg.search_domains),
                         match_domains=tuple(os_cfg.match_domains), route_all=os_cfg.route_all, base_nameservers=base)

    async def dns_query(self, name: str, qtype: int) -> DNSQueryOutcome:
        """The node's quad-100 answer (forwarded to the DNS config's upstreams or the exit node's DoH)."""
        dns = self._dns()
        ups = dns.upstreams_for(name)
        reply = await dns.answer(build_query(name, qtype))
        if reply is None:
            raise DNSUnavailable("MagicDNS dropped the query")
        return DNSQueryOutcome(reply=reply, resolvers=tuple(resolver_view(u) for u in ups))

    def debug_status(self) -> dict[str, Any]:
        """The running node's internals (control state, counters, filter drops, peers with paths); {} when stopped."""
        return self._node.status_doc() if self._node is not None else {}

    async def aclose(self) -> None:
        await self.stop()
