"""UserspaceEngine: one node's data plane, routing, MagicDNS, packet filter and peerAPI behind start/reconfig/aclose.

tailscaled's wgengine.userspaceEngine, reduced: it is built from the composition root's factories
(engine/system.py) and knows nothing about control or the backend. The backend side
(engine/ipn/tailnet_engine.py) feeds it::

    engine = UserspaceEngine(options, system, node_key, disco_key, logger)
    await engine.start()                     # leftovers removed, magicsock + TUN + device + router up, DNS, peerAPI
    engine.reconfig(netmap, prefs, exit_node=peer)   # diff-based, idempotent; netmap None = logged out
    engine.attach_control(client)            # endpoints / home DERP published to control
    engine.debug_doc(); engine.peer_stats(); engine.paths(); await engine.netcheck(); ...
    await engine.aclose()                    # routes, rules, DNS, nft, addresses restored, TUN closed (safe twice)

Subsystems: dataplane.py (magicsock, TUN, WireGuard, router), osrouting.py (exit node, forwarding,
input firewall), dnsglue.py (MagicDNS), packetfilter.py, peerapiglue.py; prefs come in as
EngineConfig, read through wgengine/prefs.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from engine.recovery.journal import DEFAULT_JOURNAL, Journal, OwnChanges
from engine.wgengine.dataplane import Counters, DataPlane
from engine.wgengine.debugdoc import add_paths, netmap_doc, offers_exit
from engine.wgengine.dnsglue import MagicDNS
from engine.wgengine.options import EngineOptions
from engine.wgengine.osrouting import REASSERT_INTERVAL, OSRouting
from engine.wgengine.packetfilter import PacketFilter
from engine.wgengine.peerapiglue import PeerAPI
from engine.wgengine.prefs import (
    EnginePrefs,
    exit_spec,
    forwards,
    offers_default_route,
    prefs_doc,
    prefs_key,
    routable_ips,
)
from engine.wgengine.reconfig import ReconfigOptions


class ControlSink(Protocol):
    """Where the engine publishes what control must learn from it (the ControlClient has these)."""

    def set_endpoints(self, endpoints: Any, types: Any = ()) -> None: ...

    def set_preferred_derp(self, region: int) -> None: ...

    def set_net_info(self, net_info: Any) -> None: ...


class UserspaceEngine:
    """See the module doc. Loop-thread only."""

    def __init__(
        self,
        options: EngineOptions,
        system: Any,
        node_key: Any,
        disco_key: Any,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        *,
        control_url: str | None = None,
        hostname: str = "",
        journal: Journal | None = None,
    ) -> None:
        self.options = options
        self.system = system
        self.log = logger or logging.getLogger("meshvpn.engine")
        tun = options.tun_name
        if journal is None:  # no composition root handed one over: a journal in options.run_dir
            journal = Journal(options.run_dir / Path(DEFAULT_JOURNAL).name, own=OwnChanges.for_tun(tun))
        self.journal = journal  # the one journal of OS changes, shared by routing and DNS
        self._dp = DataPlane(system, options, node_key, disco_key, control_url, self.log)
        self._osr = OSRouting(system, tun, journal, self.log)
        self._dns = MagicDNS(system, tun, options.dns_mode, journal, self.log)
        self._peerapi = PeerAPI(system, self.log)
        self._filter = PacketFilter(lambda: system.interface_prefixes({tun}), self.log)
        self._hostname = hostname
        self._prefs: EnginePrefs | None = None
        self._prefs_key: tuple | None = None
        self._applied_nm: Any = None  # the netmap the data plane reflects
        self._opts_applied: ReconfigOptions | None = None
        self._exit_warned: tuple | None = None
        self.exit_node_peer: Any = None  # the exit node in use (tailcfg.Node) or None
        self._control: ControlSink | None = None
        self._published_eps: tuple[str, ...] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._state = "new"  # new -> starting -> running -> closed
        self.reassert_interval = REASSERT_INTERVAL

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bring everything up; on failure what was built is torn down again and the error raised."""
        if self._state != "new":
            raise RuntimeError(f"UserspaceEngine.start() in state {self._state}")
        self._state = "starting"
        try:
            self.system.install_bypass_marking()
            self._osr.open()
            await self._dp.open_transport()
            self._dp.open()
            self._filter.tun = self._dp.tun
            self._filter.filter = getattr(self._dp.tun, "filter", None)  # AllowNone until the first netmap
            await self._dns.start()
            await self._peerapi.start(self._dns.manager, self._hostname or self.system.hostname())
        except BaseException:
            await self.aclose()
            raise
        self._state = "running"
        self._osr.set_forwarding(forwards(self._prefs) if self._prefs is not None else False)
        self._apply_filter(None)
        self._dns.apply(None, self._prefs, None, force=True)
        self._spawn(self._reassert_loop(), "engine-reassert")
        self._spawn(self._watch_loop(), "engine-watch")

    def restore_system(self) -> list[str]:
        """Give the OS back what we changed (DNS, exit routing, forwarding, firewall, routes, addresses, TUN).

        Blocking and idempotent; every step runs even if another fails. Returns the steps that failed.
        """
        failed: list[str] = []
        try:
            self._dns.restore_os()
        except Exception as e:  # noqa: BLE001 - keep restoring the rest
            self.log.error("restoring OS DNS failed: %s", e)
            failed.append("OS DNS")
        failed += self._osr.close()
        failed += self._dp.close()
        return failed

    async def aclose(self) -> None:
        """Stop the engine and restore the system (see restore_system); safe to call twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        for t in list(self._tasks):
            t.cancel()
        self.detach_control()
        failed = self.restore_system()  # first: nothing below may keep the OS from being restored
        for what, close in (
            ("peerAPI", self._peerapi.aclose),
            ("MagicDNS", self._dns.aclose),
            ("magicsock", self._dp.aclose_transport),
        ):
            try:
                await close()
            except Exception as e:  # noqa: BLE001 - keep closing the rest
                self.log.error("closing %s failed: %s", what, e)
                failed.append(what)
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if failed:
            self.log.error("engine closed; restoring failed for: %s", ", ".join(failed))
        else:
            self.log.info("data plane closed; routes, rules, DNS and addresses restored")

    def _spawn(self, coro: Any, name: str) -> None:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- reconfiguration ------------------------------------------------------------------------
    def reconfig(self, nm: Any, prefs: EnginePrefs, *, exit_node: Any = None) -> None:
        """Make everything reflect ``nm`` (None: logged out) and ``prefs``; applies only what changed.

        ``exit_node``: the peer (tailcfg.Node of ``nm``) the prefs' exit-node choice resolves to, None if
        it does not resolve; with an exit node chosen, traffic is then blackholed, never leaked.
        Before start() the prefs are only remembered.
        """
        key = prefs_key(prefs)
        changed = key != self._prefs_key
        old = self._prefs
        self._prefs, self._prefs_key = prefs, key
        if self._state != "running":
            return
        if changed:
            self.log.info("prefs: %s", prefs_doc(prefs))
            if old is None or routable_ips(old) != routable_ips(prefs):
                self._osr.set_forwarding(forwards(prefs))
        if nm is None:
            if self._applied_nm is not None or self._dp.wg_applied is not None:
                self._clear()
            else:
                self._apply_filter(None)
                self._dns.apply(None, prefs, None)
            self._apply_exit_routing()
            return
        self._apply_netmap(nm, exit_node, force=changed)

    def _apply_netmap(self, nm: Any, exit_node: Any, *, force: bool) -> None:
        p = self._prefs
        self._warn_exit(exit_spec(p) if p is not None else None, exit_node)
        opts = ReconfigOptions(
            exit_node_id=exit_node.id if exit_node is not None else None,
            accept_routes=bool(p is not None and p.route_all),
        )
        self.exit_node_peer = exit_node
        full = force or opts != self._opts_applied
        self._opts_applied = opts
        self._dp.apply(nm, opts, full=full)
        self._apply_filter(nm)
        self._dns.apply(nm, p, exit_node, force=force)
        if self._peerapi.apply(nm, self._routable(), self._filter.filter):
            self._apply_filter(nm)  # the filter opens the (new) peerAPI ports
        self._applied_nm = nm
        self._apply_exit_routing()

    def _clear(self) -> None:
        """Logged out / needs login: drop all peers and routes (the TUN stays), block inbound, restore OS DNS."""
        self._dp.clear()
        self._opts_applied = None
        self._applied_nm = None
        self.exit_node_peer = None
        self._apply_filter(None)
        self._dns.apply(None, self._prefs, None)
        self.log.info("data plane cleared (not logged in)")

    def _routable(self) -> tuple[str, ...]:
        return routable_ips(self._prefs) if self._prefs is not None else ()

    def _apply_filter(self, nm: Any) -> None:
        p = self._prefs
        self._filter.apply(
            nm,
            shields_up=bool(p is not None and p.shields_up),
            routable_ips=self._routable(),
            offers_default_route=p is not None and offers_default_route(p),
            open_tcp=self._peerapi.ports,
        )

    def _apply_exit_routing(self) -> None:
        """Table 52 + rules while an exit node is chosen and a netmap is applied (logged in).

        An exit node that does not resolve (not in the netmap, routes not approved) still gets
        the routes: traffic is blackholed rather than leaked (fail closed). Before the first
        netmap and while logged out there is no exit routing, so an interactive login's browser
        can reach the control server (tailscale installs routes only in the Running state).
        """
        p = self._prefs
        using = p is not None and exit_spec(p) is not None and self._applied_nm is not None
        self._osr.set_exit(using, bool(p is not None and p.exit_node_allow_lan_access))

    def _warn_exit(self, spec: str | None, peer: Any) -> None:
        state = (spec, peer.id if peer is not None else None, offers_exit(peer) if peer is not None else None)
        if state == self._exit_warned:
            return
        self._exit_warned = state
        if spec and peer is None:
            self.log.warning("exit node %r is not in the netmap: internet traffic is blocked", spec)
        elif peer is not None and not offers_exit(peer):
            self.log.warning(
                "%s does not offer an exit node (routes not approved?): internet traffic is blocked", peer.name
            )

    def set_node_key(self, node_key: Any) -> None:
        """Control rotated the node key: WireGuard and magicsock continue under ``node_key``."""
        self._dp.set_node_key(node_key)

    # -- control glue ---------------------------------------------------------------------------
    def attach_control(self, sink: ControlSink) -> None:
        """Publish endpoints (and, with magicsock, the home DERP and NetInfo) through ``sink`` from now on."""
        self._control = sink
        if self._dp.transport is not None:
            self._dp.transport.attach(sink)

    def detach_control(self) -> None:
        self._control = None
        if self._dp.transport is not None:
            self._dp.transport.detach()

    def endpoints(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(MapRequest.Endpoints, EndpointTypes) as of now (blocking without magicsock: reads interfaces)."""
        eps, types = self._dp.endpoints({self.options.tun_name, "lo"})
        self._published_eps = eps
        return eps, types

    async def _reassert_loop(self) -> None:
        """Put back exit routing / forwarding another program removed (nft flush ruleset, ip rule flush)."""
        while True:
            await asyncio.sleep(self.reassert_interval)
            await asyncio.to_thread(self._osr.reassert)

    async def _watch_loop(self) -> None:
        """Poll interfaces: republish endpoints (without magicsock) and rebuild an exit node's filter."""
        while True:
            await asyncio.sleep(self.options.endpoint_interval)
            if self._dp.transport is None and self._control is not None:  # magicsock republishes its own
                eps, types = await asyncio.to_thread(self._dp.endpoints, {self.options.tun_name, "lo"})
                if eps != self._published_eps and self._control is not None:
                    self.log.info("endpoints changed: %s", list(eps))
                    self._published_eps = eps
                    self._control.set_endpoints(list(eps), list(types))
            if self._prefs is not None and offers_default_route(self._prefs):
                self._filter.iface_prefixes = await asyncio.to_thread(
                    self.system.interface_prefixes, {self.options.tun_name}
                )
                self._apply_filter(self._applied_nm)  # no-op unless the attached subnets changed (key compare)

    # -- status ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def tun_up(self) -> bool:
        return self._dp.device is not None and self._state == "running"

    @property
    def applied_netmap(self) -> Any:
        """The netmap the WireGuard device and routes currently reflect (None before the first / after logout)."""
        return self._applied_nm

    @property
    def prefs(self) -> EnginePrefs | None:
        return self._prefs

    @property
    def filter(self) -> Any:
        """The packet filter in force (engine.filter.Filter), None before the data plane is up."""
        return self._filter.filter

    @property
    def counters(self) -> Counters:
        return self._dp.counters

    @property
    def has_magicsock(self) -> bool:
        return self._dp.transport is not None

    @property
    def home_derp(self) -> int:
        """magicsock's home DERP region (0 until netcheck found one, and without magicsock)."""
        return self._dp.transport.home_derp if self._dp.transport is not None else 0

    @property
    def listen_port(self) -> int:
        return self._dp.device.listen_port if self._dp.device is not None else 0

    def peer_stats(self) -> dict[str, Any]:
        """WireGuard per-peer stats by "nodekey:<hex>"."""
        return self._dp.peer_stats()

    def paths(self) -> dict[str, Any] | None:
        """magicsock's per-peer paths by "nodekey:<hex>"; None without magicsock."""
        return self._dp.paths()

    def peerapi_services(self) -> tuple[dict, ...] | None:
        """Hostinfo.Services for control: our peerAPI ports (and DNS proxying with MagicDNS)."""
        return self._peerapi.services(dns_proxy=self._dns.manager is not None)

    def debug_doc(self) -> dict[str, Any]:
        """The engine's part of the debug document (see debugdoc.DOC_KEYS; control's keys come from the backend)."""
        me, peers = netmap_doc(self._applied_nm)
        c = self._dp.counters
        p = self.exit_node_peer
        doc: dict[str, Any] = {
            "ListenPort": self.listen_port,
            "Reconfigs": c.reconfigs,
            "PeerUpserts": c.peer_upserts,
            "PeerRemoves": c.peer_removes,
            "Prefs": prefs_doc(self._prefs),
            "ExitNodeID": p.id if p is not None else None,
            "MagicDNS": self._dns.manager is not None,
            "Filter": self._filter.doc(),
            "Self": me,
            "Peers": peers,
        }
        if self._dp.transport is not None:  # magicsock: per-peer path (direct ip:port or DERP) and counters
            doc["Magicsock"] = add_paths(peers, self._dp.transport)
        return doc

    # -- diagnostics ----------------------------------------------------------------------------
    async def netcheck(self) -> dict[str, Any]:
        """magicsock's netcheck report (NotImplementedError without magicsock)."""
        if self._dp.transport is None:
            raise NotImplementedError("the node has no magicsock (netcheck) yet")
        return await self._dp.transport.netcheck()

    async def disco_ping(self, node_key_raw: bytes, timeout: float) -> Any:
        """A disco ping over magicsock (KeyError: peer without disco key; asyncio.TimeoutError)."""
        if self._dp.transport is None:
            raise NotImplementedError("the node has no magicsock (disco ping)")
        return await self._dp.transport.ping(node_key_raw, timeout)

    @property
    def dns(self) -> Any:
        """The MagicDNS manager (engine.dns.manager.DNSManager), None when MagicDNS is not running."""
        return self._dns.manager if self._state == "running" else None
