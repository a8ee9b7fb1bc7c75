"""The engine's data plane: magicsock + TUN + WireGuard device + router, and netmap diffs applied to them."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from engine.router.exitnode import BYPASS_MARK
from engine.wgengine.reconfig import (
    NO_CHANGES,
    ReconfigOptions,
    RouterConfig,
    WgConfig,
    diff_wg,
    router_config,
    wg_config,
)


@dataclass
class Counters:
    reconfigs: int = 0  # WireGuard reconfigurations (a diff with changes)
    peer_upserts: int = 0
    peer_removes: int = 0
    malformed: int = 0  # netmap entries skipped as unusable (bad prefixes, missing keys, wrong types)


class DataPlane:
    """Owns magicsock (System.new_magicsock; None = plain UDP), the TUN, the Device and the router."""

    def __init__(
        self,
        system: Any,
        options: Any,
        node_key: Any,
        disco_key: Any,
        control_url: str | None,
        logger: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self._system = system
        self._o = options
        self._node_key = node_key
        self._disco_key = disco_key
        self._control_url = control_url
        self.log = logger
        self.transport: Any = None  # engine.wgengine.transport.NodeTransport (magicsock)
        self.tun: Any = None
        self.device: Any = None
        self.router: Any = None
        self.wg_applied: WgConfig | None = None
        self.router_applied: RouterConfig | None = None
        self.counters = Counters()

    async def open_transport(self) -> None:
        """Magicsock (UDP + DERP + disco + STUN), when the System has it."""
        if self._system.new_magicsock is None:
            return
        t = self._system.new_magicsock(
            self._node_key,
            self._disco_key,
            port=self._o.listen_port,
            fwmark=BYPASS_MARK,
            control_url=self._control_url,
            logger=self.log.getChild("magicsock"),
        )
        self.transport = await t.start()

    def open(self) -> None:
        """TUN, WireGuard device (over magicsock's bind) and router, up."""
        o = self._o
        self.tun = self._system.new_tun(o.tun_name, o.mtu)
        self.device = self._system.new_device(
            o.tun_name,
            mtu=o.mtu,
            tun=self.tun,
            logger=self.log.getChild("wg"),
            bind=self.transport.bind if self.transport is not None else None,
        )
        self.device.set_private_key(self._node_key.raw)
        self.device.set_listen_port(o.listen_port)
        if hasattr(self.device, "set_fwmark"):
            self.device.set_fwmark(BYPASS_MARK)  # WireGuard UDP never enters table 52
        self.device.up()
        self.router = self._system.new_router(o.tun_name, self.log.getChild("router"))
        self.router.up(o.mtu)
        self.log.info(
            "data plane up: %s listen port %d, node key %s",
            o.tun_name,
            self.device.listen_port,
            self._node_key.public().short(),
        )

    def set_node_key(self, node_key: Any) -> None:
        """Control rotated our node key: WireGuard and DERP continue under the new one."""
        self._node_key = node_key
        if self.device is not None:
            self.device.set_private_key(node_key.raw)
        if self.transport is not None:
            self.transport.set_node_key(node_key)

    # -- reconfiguration -----------------------------------------------------------------------
    def apply(self, nm: Any, opts: ReconfigOptions, *, full: bool) -> None:
        """WireGuard peers (diff only), magicsock peers and the router for ``nm``."""
        incremental = not full and not nm.self_changed
        problems: list[str] = []
        new = wg_config(nm, opts, prev=self.wg_applied if incremental else None, problems=problems)
        if problems:
            self.counters.malformed += len(problems)
            self.log.warning("netmap: skipped %d malformed entries: %s", len(problems), "; ".join(problems[:5]))
        diff = diff_wg(self.wg_applied, new, hint=nm.delta if incremental and self.wg_applied is not None else None)
        t = self.transport
        if t is not None and (diff is not NO_CHANGES or nm.derp_map is not None):
            t.update(nm, new)  # before WireGuard: magicsock must know the peers it sends to
        if diff is not NO_CHANGES and self.device is not None:
            self.counters.reconfigs += 1
            for k in diff.remove:
                self.device.remove_peer(k.raw)
                self.counters.peer_removes += 1
            prev_peers = self.wg_applied.peers if self.wg_applied is not None else {}
            for p in diff.upsert:
                ep = t.wg_endpoint(p) if t is not None else p.endpoint
                prev = prev_peers.get(p.public_key)
                same_ips = prev is not None and prev.allowed_ips == p.allowed_ips
                if t is not None and same_ips and t.wg_endpoint(prev) == ep:
                    continue  # only candidate endpoints/DERP changed: magicsock has them, WireGuard is unchanged
                self.device.upsert_peer(
                    p.public_key.raw, endpoint=ep, allowed_ips=list(p.allowed_ips), replace_allowed_ips=True
                )
                self.counters.peer_upserts += 1
            self.log.info(
                "wg: %d peers (+%d upserted, -%d removed)", len(new.peers), len(diff.upsert), len(diff.remove)
            )
        self.wg_applied = new
        if diff is not NO_CHANGES or nm.self_changed or self.router_applied is None or full:
            rc = router_config(nm, new)  # O(peers): only when WireGuard peers or self changed
            if rc != self.router_applied and self.router is not None:
                self.router.set(rc)
            self.router_applied = rc

    def clear(self) -> None:
        """Logged out / needs login: no peers, no routes; the TUN and its addresses stay."""
        if self.device is not None and self.wg_applied is not None:
            for k in self.wg_applied.peers:
                self.device.remove_peer(k.raw)
        if self.router is not None:
            self.router.set(RouterConfig(local_addrs=self.router_applied.local_addrs if self.router_applied else ()))
        if self.transport is not None:
            self.transport.update(None, None)  # no peers for magicsock either
        self.wg_applied = None
        self.router_applied = None

    # -- status ---------------------------------------------------------------------------------
    def endpoints(self, exclude_ifaces: set[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(MapRequest.Endpoints, EndpointTypes): magicsock's STUN-mapped + interface addresses, else interfaces."""
        if self.transport is not None:
            return self.transport.endpoints()
        if self.device is None:
            return (), ()
        eps = tuple(self._system.local_endpoints(self.device.listen_port, exclude_ifaces))
        return eps, tuple(1 for _ in eps)

    def peer_stats(self) -> dict[str, Any]:
        """WireGuard per-peer stats (rx/tx, last handshake, endpoint) by "nodekey:<hex>"."""
        if self.device is None:
            return {}
        from engine.types.keys import NodePublic

        return {str(NodePublic(p.public_key)): p for p in self.device.peers()}

    def paths(self) -> dict[str, Any] | None:
        """magicsock's per-peer PathStatus by "nodekey:<hex>"; None without magicsock."""
        if self.transport is None:
            return None
        from engine.types.keys import NodePublic

        return {str(NodePublic(k)): ps for k, ps in self.transport.paths().items()}

    # -- shutdown -------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Router (routes, addresses) then device and TUN; each step runs even if another fails."""
        failed: list[str] = []
        for what, obj in (("routes and addresses", self.router), ("WireGuard device", self.device), ("TUN", self.tun)):
            if obj is None:
                continue
            try:
                obj.close()
            except Exception as e:  # noqa: BLE001 - keep restoring the rest
                self.log.error("closing %s failed: %s", what, e)
                failed.append(what)
        return failed

    async def aclose_transport(self) -> None:
        t, self.transport = self.transport, None
        if t is not None:
            with contextlib.suppress(Exception):
                await t.aclose()
