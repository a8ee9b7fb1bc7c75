"""NodeTransport: the node's MagicConn (UDP + DERP + disco + STUN) kept in step with the netmap and control.

    t = NodeTransport(node_private, disco_private, fwmark=BYPASS_MARK, logger=log)
    await t.start()                          # socket bound, DERP/disco timers running
    Device(name, tun=tun, bind=t.bind)       # WireGuard endpoints: t.wg_endpoint(peer)
    t.attach(control_client)                 # endpoints + PreferredDERP follow netcheck
    t.update(netmap, wg_config)              # DERP map + peers (node key, disco key, home DERP, endpoints)
    t.path(node_key_raw); await t.ping(node_key_raw); await t.netcheck()
    await t.aclose()

What the node publishes: MapRequest.Endpoints = STUN-mapped addresses then interface
addresses (MagicConn.endpoints), Hostinfo.NetInfo.PreferredDERP = the home region netcheck
picked (0 until the first netcheck, so peers never aim at a region we are not connected to).
The first netcheck runs as soon as a netmap brings a DERP map; MagicConn re-STUNs by itself
afterwards and this module republishes endpoints / home DERP whenever they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from engine.magicsock.bind import PeerEndpoint
from engine.magicsock.conn import MagicConn, PeerConfig
from engine.magicsock.endpoint import PathStatus
from engine.types.keys import DiscoPublic

DERP_HTTP_ENV = ("MESH_DEBUG_USE_DERP_HTTP", "TS_DEBUG_USE_DERP_HTTP")  # plain-HTTP DERP (lab/headscale dev)
HOME_WATCH_INTERVAL = 1.0  # s between checks of the home DERP (MagicConn's re-STUN may move it)


def derp_http_from_env(env: dict[str, str] | None = None) -> bool:
    """True if $MESH_DEBUG_USE_DERP_HTTP or $TS_DEBUG_USE_DERP_HTTP is set to a true value."""
    env = os.environ if env is None else env
    return any(env.get(k, "").lower() in ("1", "true", "yes") for k in DERP_HTTP_ENV)


def derp_http_for(control_url: str | None, env: dict[str, str] | None = None) -> bool:
    """DERP over plain HTTP: when asked by the environment, or when control itself is plain http://.

    A control server reached without TLS (a headscale dev/lab setup) serves its embedded DERP on
    the same plain-HTTP listener; with TLS control, DERP uses TLS like tailscaled does.
    """
    return derp_http_from_env(env) or (control_url or "").lower().startswith("http://")


@dataclass(frozen=True, slots=True)
class PingResult:
    """One disco ping: latency, and either the direct ip:port or the DERP region it came back over."""

    latency: float
    endpoint: str = ""  # "ip:port" when answered over a direct path
    derp_region: int = 0
    derp_code: str = ""


def path_json(st: PathStatus | None) -> dict | None:
    """A PathStatus for status files: {"Kind": "direct"|"derp", "CurAddr", "DERPRegion", "LatencyMs", ...}."""
    if st is None:
        return None
    return {
        "Kind": st.path,
        "CurAddr": st.addr,
        "DERPRegion": st.derp_region,
        "LatencyMs": st.latency_ms,
        "BestAddr": st.best_addr,
        "Candidates": list(st.candidates),
        "PingsSent": st.pings_sent,
        "PongsReceived": st.pongs_received,
        "TxDirect": st.tx_direct_packets,
        "TxDERP": st.tx_derp_packets,
        "RxDirect": st.rx_direct_packets,
        "RxDERP": st.rx_derp_packets,
    }


class NodeTransport:
    """MagicConn lifecycle + netmap/control glue for one node (loop-thread only, except ``bind``)."""

    def __init__(
        self,
        node_private: Any,
        disco_private: Any,
        *,
        port: int = 0,
        fwmark: int = 0,
        use_derp_http: bool | None = None,
        control_url: str | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        conn_factory: Callable[..., MagicConn] = MagicConn,
    ) -> None:
        self.log = logger or logging.getLogger("engine.wgengine.transport")
        self._fwmark = fwmark
        http = derp_http_for(control_url) if use_derp_http is None else use_derp_http
        self.conn = conn_factory(
            node_private, disco_private=disco_private, port=port, use_derp_http=http, logger=self.log
        )
        self._client: Any = None
        self._derp_json: Any = None
        self._derp_obj: Any = None  # the tailcfg DERPMap last encoded (netmaps reuse the object)
        self._region_codes: dict[int, str] = {}
        self._published_derp = 0
        self._published_eps: tuple[str, ...] = ()
        self._netchecked = False
        self._tasks: set[asyncio.Task] = set()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> "NodeTransport":
        await self.conn.__aenter__()
        self._started = True
        if self._fwmark:
            with contextlib.suppress(OSError):  # SO_MARK needs CAP_NET_ADMIN
                self.conn.set_fwmark(self._fwmark)
        self._spawn(self._watch_home(), "transport-home-derp")
        self.log.info("magicsock up: UDP port %d, disco key %s", self.conn.port, self.disco_public.short())
        return self

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._started:
            self._started = False
            await self.conn.aclose()

    def _spawn(self, coro, name: str) -> None:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- what the node needs ---------------------------------------------------------------
    def set_node_key(self, node_private: Any) -> None:
        """The control server rotated our node key: DERP connections are redialled under the new one."""
        self.conn.set_node_private(node_private)

    @property
    def bind(self):
        return self.conn.bind

    @property
    def port(self) -> int:
        return self.conn.port

    @property
    def disco_public(self) -> DiscoPublic:
        return DiscoPublic(self.conn.disco_public)

    @property
    def home_derp(self) -> int:
        return self.conn.home_derp

    def endpoints(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(MapRequest.Endpoints, EndpointTypes) as of now."""
        eps = self.conn.endpoints()
        return tuple(e.addr for e in eps), tuple(e.type for e in eps)

    def wg_endpoint(self, peer: Any) -> Any:
        """WireGuard endpoint for a reconfig.WgPeer: magicsock picks the path for disco-capable peers."""
        if peer.disco_key is None:
            return peer.endpoint  # a WireGuard-only peer: plain UDP to its endpoint
        return PeerEndpoint(peer.public_key.raw)

    # -- control ---------------------------------------------------------------------------
    def attach(self, client: Any) -> None:
        """Publish endpoints and the home DERP through ``client`` from now on.

        ``client`` needs set_endpoints(addrs, types), set_preferred_derp(region) and set_net_info(NetInfo)
        (the ControlClient has them).
        """
        self._client = client
        self.conn.on_endpoints_changed = self._publish_endpoints
        self._publish_endpoints(self.conn.endpoints())
        self._publish_home()

    def detach(self) -> None:
        self._client = None
        self.conn.on_endpoints_changed = None

    def _publish_endpoints(self, eps: list) -> None:
        if self._client is None:
            return
        addrs, types = [e.addr for e in eps], [e.type for e in eps]
        if tuple(addrs) != self._published_eps:
            self._published_eps = tuple(addrs)
            self.log.info("endpoints: %s", addrs)
        self._client.set_endpoints(addrs, types)

    def _publish_home(self) -> None:
        rid = self.conn.home_derp
        if self._client is None or not rid or rid == self._published_derp:
            return
        self._published_derp = rid
        self.log.info("home DERP: region %d (%s)", rid, self._region_codes.get(rid, "?"))
        if self.conn.report is not None:
            self._publish_net_info()
        else:
            self._client.set_preferred_derp(rid)

    def _publish_net_info(self) -> None:
        """The whole NetInfo of the last netcheck (peers and admins see UDP, latencies, NAT behaviour)."""
        if self._client is None or self.conn.report is None:
            return
        from engine.tailcfg import NetInfo, WireError, decode

        try:
            ni = decode(NetInfo, self.conn.net_info())
        except WireError as e:  # our own report: never expected, but NetInfo must not stop the node
            self.log.warning("netcheck report not publishable: %s", e)
            return
        self._client.set_net_info(ni)

    async def _watch_home(self) -> None:
        while True:
            await asyncio.sleep(HOME_WATCH_INTERVAL)
            self._publish_home()

    # -- netmap ----------------------------------------------------------------------------
    def update(self, nm: Any, wg: Any) -> None:
        """DERP map and peers from a netmap (``wg``: its reconfig.WgConfig); cheap when nothing changed."""
        dm = getattr(nm, "derp_map", None)
        if dm is not None and dm is not self._derp_obj:
            from engine.tailcfg import encode

            self._derp_obj = dm
            dj = encode(dm)
            if dj != self._derp_json:
                self._derp_json = dj
                self.conn.set_derp_map(dj)
                self._region_codes = {int(rid): r.region_code for rid, r in (dm.regions or {}).items()}
                if not self._netchecked and self.conn.derp_map.regions:
                    self._netchecked = True
                    self._spawn(self._first_netcheck(), "transport-netcheck")
        peers = (
            []
            if wg is None
            else [
                PeerConfig.make(p.public_key.raw, p.disco_key.raw, p.home_derp, p.endpoints)
                for p in wg.peers.values()
                if p.disco_key is not None
            ]
        )
        self.conn.set_peers(peers)

    async def _first_netcheck(self) -> None:
        try:
            rep = await self.conn.netcheck()
            self.log.info(
                "netcheck: UDP=%s home DERP %d, endpoints %s",
                rep.udp,
                self.conn.home_derp,
                [e.addr for e in self.conn.endpoints()],
            )
        except Exception as e:  # noqa: BLE001 - DERP still works with the fallback home region
            self.log.warning("netcheck failed: %s", e)
        self._publish_home()
        self._publish_net_info()

    # -- status ----------------------------------------------------------------------------
    def region_code(self, rid: int) -> str:
        return self._region_codes.get(int(rid or 0), "")

    def path(self, node_key: bytes) -> PathStatus | None:
        return self.conn.peer_status().get(bytes(node_key))

    def paths(self) -> dict[bytes, PathStatus]:
        return self.conn.peer_status()

    async def ping(self, node_key: bytes, timeout: float = 5.0) -> PingResult:
        """A disco ping (`tailscale ping`): via DERP until a direct path answers, then direct."""
        r = await self.conn.ping(bytes(node_key), timeout)
        if r.addr is not None:
            ip, port = r.addr
            return PingResult(r.latency, endpoint=f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        return PingResult(r.latency, derp_region=r.derp_region, derp_code=self.region_code(r.derp_region))

    async def netcheck(self) -> dict:
        """A fresh netcheck report (tailscale's netcheck JSON) plus RegionCodes for display."""
        rep = (await self.conn.netcheck()).to_json()
        rep.setdefault("RegionCodes", {str(k): v for k, v in self._region_codes.items()})
        self._publish_home()
        return rep

    def status(self) -> dict:
        """Diagnostics (no secrets): port, home DERP, endpoints, DERP connections, counters."""
        return {
            "Port": self.conn.port,
            "HomeDERP": self.conn.home_derp,
            "Endpoints": [e.addr for e in self.conn.endpoints()],
            "DERP": {
                str(k): dataclasses.asdict(v) if dataclasses.is_dataclass(v) else str(v)
                for k, v in self.conn.derp_status().items()
            },
            "Counters": dataclasses.asdict(self.conn.counters),
        }


__all__ = ["NodeTransport", "PingResult", "derp_http_for", "derp_http_from_env", "path_json"]
