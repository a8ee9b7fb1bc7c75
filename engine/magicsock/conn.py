"""MagicConn: the UDP socket, DERP clients, disco and STUN for all peers (asyncio + one reader thread).

    ms = MagicConn(node_private, derp_map=..., use_derp_http=True)
    async with ms:                       # socket bound, reader thread + timers running
        dev = Device(name, bind=ms.bind)  # WireGuard endpoints: PeerEndpoint(node_key)
        ms.set_peers([PeerConfig(node_key, disco_key, home_derp, endpoints)])
        await ms.netcheck()               # STUN -> endpoints, NetInfo, home DERP
        ms.endpoints(); ms.net_info(); ms.peer_status()

Threads: a reader thread owns `recvfrom` and demuxes STUN | disco | WireGuard
(stun.is_binding_response, disco magic, else WireGuard). WireGuard goes straight to the Bind's
bounded queue. STUN (only while a netcheck waits) and disco from a known sender key pass a
per-source-IP token bucket, then a bounded Batch that the loop drains with one wakeup per
batch; anything beyond a limit is dropped and counted in MagicCounters. An address is bound
to a peer (WireGuard receive attribution, sends to a UdpEndpoint) only after a Pong from it
answered our ping to it. Device workers call `send_wireguard`
which consults the peer's PeerPath under a lock and sends over UDP directly, or schedules the
DERP write on the loop. Path cores (endpoint.PeerPath) are pure; `now` is `clock()`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import nacl.public

from engine.dataplane.endpoint import UdpEndpoint
from engine.derp import protocol as dp
from engine.derp.client import DerpClient
from engine.derp.derpmap import DerpMap
from engine.disco import box as dbox
from engine.disco.message import CallMeMaybe, Ping, Pong
from engine.magicsock import constants as C
from engine.magicsock.bind import MagicBind, PeerEndpoint
from engine.magicsock.endpoint import (
    AddrPort,
    PathCounters,
    PathStatus,
    PeerPath,
    SendCallMeMaybe,
    SendPing,
    usable_candidate,
)
from engine.magicsock.limits import FIRST, FULL, Batch, SourceLimiter
from engine.net import netcheck, stun
from engine.net.interfaces import interface_ipv4_addrs

NOTE_SEND_EVERY = 0.25  # seconds: how often a data send consults the path core
DERP_INACTIVE_CLEANUP = 60.0  # seconds before an unused non-home DERP connection is closed
IDLE_NETCHECK_INTERVAL = 300.0  # seconds: full netcheck at least this often even when idle
RESTUN_INTERVAL = 23.0  # seconds between background netchecks (tailscale: 20-26 s)
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
ENDPOINT_LOCAL = 1  # tailcfg.EndpointType values
ENDPOINT_STUN = 2


def _raw32(k: object) -> bytes:
    """32 raw bytes of a key given as bytes, an engine.types.keys key (.raw) or anything bytes() accepts."""
    if isinstance(k, (bytes, bytearray)):
        b = bytes(k)
    else:
        raw = getattr(k, "raw", None)
        b = bytes(raw() if callable(raw) else raw) if raw is not None else bytes(k)
    if len(b) != 32:
        raise ValueError(f"key must be 32 bytes, got {len(b)}")
    return b


def _private(k: object) -> nacl.public.PrivateKey:
    if isinstance(k, nacl.public.PrivateKey):
        return k
    return nacl.public.PrivateKey(_raw32(k))


def _fmt(a: AddrPort) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


def parse_addrport(text: str) -> AddrPort:
    ep = UdpEndpoint.parse(text)
    return str(ep.ip), ep.port


@dataclass(frozen=True)
class PeerConfig:
    """What magicsock needs of a netmap peer."""

    node_key: bytes
    disco_key: bytes
    home_derp: int = 0
    endpoints: tuple[str, ...] = ()  # "ip:port"

    @classmethod
    def make(cls, node_key, disco_key, home_derp: int = 0, endpoints: Iterable[str] = ()) -> "PeerConfig":
        return cls(_raw32(node_key), _raw32(disco_key), int(home_derp or 0), tuple(endpoints))


@dataclass(frozen=True)
class PingReply:
    """A Pong to MagicConn.ping: round trip, the UDP source (direct) or None with the DERP region."""

    latency: float
    addr: AddrPort | None
    derp_region: int = 0


@dataclass(frozen=True)
class Endpoint:
    """One of our endpoint candidates for MapRequest.Endpoints / EndpointTypes."""

    addr: str
    type: int


@dataclass
class MagicCounters(PathCounters):
    """Packet and drop counts (status "Counters"); the PathCounters fields count for all peers."""

    udp_rx: int = 0
    udp_tx: int = 0
    derp_rx: int = 0
    derp_tx: int = 0
    derp_tx_dropped: int = 0
    disco_rx: int = 0
    disco_tx: int = 0
    disco_dropped: int = 0
    stun_rx: int = 0
    cmm_via_udp_dropped: int = 0
    wg_unknown_src: int = 0
    send_no_peer: int = 0
    send_errors: int = 0
    rx_queue_dropped: int = 0  # WireGuard datagrams dropped: Bind receive queue full (RX_QUEUE_MAX)
    rx_queue_peak: int = 0  # high-water mark of that queue
    ctl_queue_dropped: int = 0  # disco/STUN datagrams dropped: loop batch full (CTL_QUEUE_MAX)
    ctl_queue_peak: int = 0  # high-water mark of that batch
    ctl_rate_limited: int = 0  # disco/STUN datagrams over their source IP's rate (CTL_SOURCE_RATE)
    stun_unsolicited: int = 0  # STUN responses while no netcheck was waiting


@dataclass
class _Peer:
    cfg: PeerConfig
    path: PeerPath
    last_note: float = -1e9
    endpoint: PeerEndpoint | None = None

    def __post_init__(self) -> None:
        self.endpoint = PeerEndpoint(self.cfg.node_key)


class MagicConn:
    """See the module docstring. Use as `async with`; all public methods are loop-thread only
    except `send_wireguard`/`bind` (any thread)."""

    def __init__(
        self,
        node_private: object,
        *,
        disco_private: object | None = None,
        port: int = 0,
        bind_host: str = "0.0.0.0",
        derp_map: DerpMap | dict | None = None,
        use_derp_http: bool = False,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
        local_addrs: Callable[[], list[str]] | None = None,
        restun_interval: float = RESTUN_INTERVAL,
    ) -> None:
        self._node = _private(node_private)
        self.node_public = bytes(self._node.public_key)
        self._disco = dbox.DiscoCrypto(
            private=_private(disco_private) if disco_private is not None else nacl.public.PrivateKey.generate(),
            random=random,
        )
        self.disco_public = self._disco.public
        self._want_port = port
        self._bind_host = bind_host
        self._use_http = use_derp_http
        self._log = logger or logging.getLogger("engine.magicsock")
        self._clock = clock
        self._random = random
        self._local_addrs = local_addrs or interface_ipv4_addrs
        self._restun_interval = restun_interval
        self.derp_map = DerpMap.from_json(derp_map) if isinstance(derp_map, dict) else (derp_map or DerpMap())
        self.counters = MagicCounters()
        # reader thread -> loop: (data, addr, is_stun)
        self._ctl: Batch[tuple[bytes, AddrPort, bool]] = Batch(C.CTL_QUEUE_MAX)
        self._ctl_limiter = SourceLimiter(C.CTL_SOURCE_RATE, C.CTL_SOURCE_BURST, C.CTL_MAX_SOURCES)
        self._addr_prune_at = 0.0
        self.bind = MagicBind(self)
        self.port = 0
        self.home_derp = 0
        self.report: netcheck.Report | None = None
        self.on_endpoints_changed: Callable[[list[Endpoint]], None] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._peers: dict[bytes, _Peer] = {}
        self._by_disco: dict[bytes, list[bytes]] = {}
        self._addr_peer: dict[AddrPort, bytes] = {}
        self._derps: dict[int, DerpClient] = {}
        self._derp_tasks: dict[int, asyncio.Task] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._netcheck_run: netcheck.NetcheckRun | None = None
        self._netcheck_done: asyncio.Event | None = None
        self._netcheck_lock: asyncio.Lock | None = None
        self._endpoints: list[Endpoint] = []
        self._last_stun: float | None = None
        self._fwmark = 0
        self._v6 = False
        self._sa_cache: dict[AddrPort, tuple] = {}
        self._bg: list[asyncio.Task] = []
        self._derp_last_use: dict[int, float] = {}
        self._restun_task: asyncio.Task | None = None
        self._cli_pings: dict[bytes, tuple[asyncio.Future, float]] = {}  # txid -> (waiter, sent) for ping()
        self.gso = False  # UDP_SEGMENT sends (probed at open; off for good after EIO)
        self.gro = False  # UDP_GRO receives

    # ---- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> "MagicConn":
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._netcheck_lock = asyncio.Lock()
        sock = self._open_socket()
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        try:
            sock.getsockopt(SOL_UDP, UDP_SEGMENT)
            self.gso = True
        except OSError:
            self.gso = False
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._reader = threading.Thread(target=self._read_loop, name="magicsock-rx", daemon=True)
        self._reader.start()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._bg = [
            self._tg.create_task(self._timer_loop(), name="magicsock-timers"),
            self._tg.create_task(self._restun_loop(), name="magicsock-restun"),
        ]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bind.close()
        for c in self._derps.values():
            c.close()
        if self._wake is not None:
            self._wake.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._tg is not None:
            for t in list(self._derp_tasks.values()):
                t.cancel()
            tg, self._tg = self._tg, None
            for task in self._bg:
                task.cancel()
            if self._restun_task is not None:
                self._restun_task.cancel()
            await tg.__aexit__(None, None, None)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 2.0)

    def _open_socket(self) -> socket.socket:
        """Dual-stack UDP socket ("::", IPV6_V6ONLY off) unless IPv6 is unavailable or an IPv4
        bind_host was given; IPv4 peers then appear as ::ffff:a.b.c.d at the socket only."""
        family = socket.AF_INET
        host = self._bind_host
        if host in ("", "0.0.0.0", "::") and socket.has_ipv6:
            try:
                probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                probe.close()
                family, host = socket.AF_INET6, "::"
            except OSError:
                family, host = socket.AF_INET, "0.0.0.0"
        elif ":" in host:
            family = socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            if self._fwmark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self._fwmark)
            sock.bind((host, self._want_port))
        except OSError:
            sock.close()
            if family == socket.AF_INET6 and self._bind_host in ("", "0.0.0.0", "::"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                family = socket.AF_INET
                try:
                    sock.bind(("0.0.0.0", self._want_port))
                except BaseException:
                    sock.close()
                    raise
            else:
                raise
        self._v6 = family == socket.AF_INET6
        self._sa_cache: dict[AddrPort, tuple] = {}
        return sock

    def _sockaddr(self, addr: AddrPort) -> tuple | None:
        """Our (ip, port) -> the socket's address form; None if this socket cannot reach it."""
        sa = self._sa_cache.get(addr)
        if sa is None:
            v6 = ":" in addr[0]
            if self._v6:
                sa = (addr[0] if v6 else "::ffff:" + addr[0], addr[1], 0, 0)
            elif v6:
                return None
            else:
                sa = addr
            if len(self._sa_cache) > 4096:
                self._sa_cache.clear()
            self._sa_cache[addr] = sa
        return sa

    def set_fwmark(self, mark: int) -> None:
        """SO_MARK on the UDP socket now and on DERP connections from their next dial."""
        self._fwmark = mark
        for c in self._derps.values():
            c.fwmark = mark
        if self._sock is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)

    # ---- configuration (loop thread) ------------------------------------------------------

    def set_derp_map(self, derp_map: DerpMap | dict) -> None:
        self.derp_map = DerpMap.from_json(derp_map) if isinstance(derp_map, dict) else derp_map
        for rid in [r for r in self._derps if r not in self.derp_map.regions]:
            self._close_derp(rid)

    def set_peers(self, peers: Iterable[PeerConfig]) -> None:
        """Replace the peer set (from the netmap). Unchanged peers keep their path state."""
        now = self._clock()
        actions = []
        with self._lock:
            wanted = {p.node_key: p for p in peers}
            for nk in [k for k in self._peers if k not in wanted]:
                old = self._peers.pop(nk)
                self._disco.forget(old.cfg.disco_key)
            for nk, cfg in wanted.items():
                eps = [parse_addrport(e) for e in cfg.endpoints]
                cur = self._peers.get(nk)
                if cur is None or cur.cfg.disco_key != cfg.disco_key:
                    cur = _Peer(
                        cfg=cfg,
                        path=PeerPath(
                            node_key=nk, disco_key=cfg.disco_key, random=self._random, counters=self.counters
                        ),
                    )
                    self._peers[nk] = cur
                cur.cfg = cfg
                cur.path.home_derp = cfg.home_derp
                # netmap endpoints are claims: bound to the peer only once a pong verifies them
                actions += [(nk, a) for a in cur.path.set_netmap_endpoints(eps, now)]
            self._by_disco = {}
            for nk, p in self._peers.items():
                self._by_disco.setdefault(p.cfg.disco_key, []).append(nk)
            live = set(self._peers)
            self._addr_peer = {a: k for a, k in self._addr_peer.items() if k in live}
        for nk, a in actions:
            self._do_action(nk, a)
        self._kick()

    def set_node_private(self, node_private: object) -> None:
        """A rotated node key: DERP servers know us by it, so every DERP connection is redialled with the new key."""
        k = _private(node_private)
        if bytes(k.public_key) == self.node_public:
            return
        self._node = k
        self.node_public = bytes(k.public_key)
        for rid in list(self._derps):
            self._close_derp(rid)
        if self.home_derp and self.home_derp in self.derp_map.regions:
            self._ensure_derp(self.home_derp).note_preferred(True)

    def set_home_derp(self, region_id: int) -> None:
        """Use `region_id` as home DERP (normally chosen by netcheck)."""
        if region_id == self.home_derp:
            return
        old = self.home_derp
        self.home_derp = region_id
        if old in self._derps:
            self._derps[old].note_preferred(False)
        if region_id:
            self._ensure_derp(region_id).note_preferred(True)

    # ---- status -------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Our candidates for MapRequest.Endpoints (+ EndpointTypes): STUN first, then local."""
        return list(self._endpoints) or self._compute_endpoints()

    def net_info(self) -> dict:
        """tailcfg.NetInfo JSON for Hostinfo.NetInfo (PreferredDERP is what peers use to reach us)."""
        if self.report is None:
            return {"PreferredDERP": self.home_derp, "WorkingUDP": None}
        d = self.report.net_info()
        d["PreferredDERP"] = self.home_derp or d.get("PreferredDERP", 0)
        return d

    def peer_status(self) -> dict[bytes, PathStatus]:
        now = self._clock()
        with self._lock:
            return {nk: p.path.status(now) for nk, p in self._peers.items()}

    def derp_status(self) -> dict[int, object]:
        return {rid: c.status() for rid, c in self._derps.items()}

    # ---- netcheck -------------------------------------------------------------------------

    async def netcheck(self, timeout: float = netcheck.STUN_TIMEOUT) -> netcheck.Report:
        """STUN every region from our socket; update endpoints, NetInfo and the home DERP."""
        async with self._netcheck_lock:
            probes = netcheck.plan(self.derp_map, self._random)
            run = netcheck.NetcheckRun(probes, self._clock())
            self._netcheck_done = asyncio.Event()
            self._netcheck_run = run
            for pr in probes:
                self._udp_send(pr.packet, pr.dest)
            try:
                if probes:
                    async with asyncio.timeout(timeout):
                        await self._netcheck_done.wait()
            except asyncio.TimeoutError:
                pass
            finally:
                self._netcheck_run = None
            tcp_lat = None
            if not run.answers and self.derp_map.regions:
                tcp_lat = await self._tcp_latency()
            prev = self.report.preferred_derp if self.report else 0
            rep = run.report(previous_home=prev, tcp_latency=tcp_lat)
            self.report = rep
            self._last_stun = self._clock()
            if rep.preferred_derp:
                self.set_home_derp(rep.preferred_derp)
            elif not self.home_derp and self.derp_map.regions:
                self.set_home_derp(min(self.derp_map.regions))
            self._update_endpoints()
            return rep

    async def _tcp_latency(self) -> dict[int, float]:
        """Fallback when UDP is blocked: TCP connect time to each region's DERP port."""
        out: dict[int, float] = {}

        async def one(rid, node):
            t0 = self._clock()
            try:
                async with asyncio.timeout(2.0):
                    _r, w = await asyncio.open_connection(node.dial_host(), node.derp_port_for(self._use_http))
            except (OSError, asyncio.TimeoutError):
                return
            out[rid] = self._clock() - t0
            w.close()

        await asyncio.gather(
            *(one(rid, r.derp_nodes()[0]) for rid, r in self.derp_map.regions.items() if r.derp_nodes())
        )
        return out

    def _compute_endpoints(self) -> list[Endpoint]:
        eps: list[Endpoint] = []
        seen = set()
        if self.report is not None:
            stun_addrs = list(dict.fromkeys(self.report.mapped.values()))
            for a in stun_addrs:
                if a not in seen:
                    seen.add(a)
                    eps.append(Endpoint(_fmt(a), ENDPOINT_STUN))
        # never the tunnel's own addresses (100.64/10): a "direct path" through the tunnel loops
        locals_ = [
            a for a in self._local_addrs() if not ipaddress.ip_address(a).is_loopback and usable_candidate((a, 1))
        ]
        if not locals_ and not eps:
            locals_ = ["127.0.0.1"]
        for ip in locals_:
            a = (ip, self.port)
            if a not in seen:
                seen.add(a)
                eps.append(Endpoint(_fmt(a), ENDPOINT_LOCAL))
        return eps

    def _update_endpoints(self) -> None:
        eps = self._compute_endpoints()
        if eps != self._endpoints:
            self._endpoints = eps
            if self.on_endpoints_changed is not None:
                try:
                    self.on_endpoints_changed(list(eps))
                except Exception:  # noqa: BLE001 - a callback bug must not kill magicsock
                    self._log.exception("on_endpoints_changed failed")

    async def _restun_loop(self) -> None:
        """Re-STUN every restun_interval while some peer session is active (NAT mappings need
        refreshing and may move); when idle only every IDLE_NETCHECK_INTERVAL (no idle wakeups
        storm, scenario B4)."""
        while not self._closed:
            await asyncio.sleep(self._restun_interval)
            if not self.derp_map.regions:
                continue
            with self._lock:
                active = any(not p.path.idle for p in self._peers.values())
            stale = self._last_stun is None or self._clock() - self._last_stun >= IDLE_NETCHECK_INTERVAL
            if active or stale:
                await self.netcheck()

    def _restun_if_stale(self) -> None:
        """Before a CallMeMaybe: refresh our STUN endpoints if older than ENDPOINTS_FRESH_ENOUGH."""
        if self._tg is None or self._restun_task is not None or not self.derp_map.regions:
            return
        if self._last_stun is not None and self._clock() - self._last_stun < C.ENDPOINTS_FRESH_ENOUGH:
            return

        async def go() -> None:
            try:
                await self.netcheck()
            finally:
                self._restun_task = None

        self._restun_task = self._tg.create_task(go(), name="magicsock-restun-now")

    # ---- disco ping (`tailscale ping`) ------------------------------------------------------

    async def ping(self, node_key: object, timeout: float = 5.0) -> "PingReply":
        """One disco ping to a peer: over its trusted direct path if there is one, else via
        DERP and to every candidate address over UDP (a discovery round starts too, so a later
        ping can come back direct), as tailscale's cliPing does. Returns the first Pong;
        asyncio.TimeoutError after `timeout`, KeyError for an unknown peer."""
        nk = _raw32(node_key)
        now = self._clock()
        with self._lock:
            p = self._peers.get(nk)
            if p is None:
                raise KeyError("not a peer")
            trusted = p.path.best_addr if p.path.trusted(now) else None
            udp = [trusted] if trusted is not None else list(p.path.candidates)
            actions = [] if trusted is not None else p.path.note_send(now)
            region, disco = p.cfg.home_derp, p.cfg.disco_key
        fut = self._loop.create_future()
        sends: list[tuple[bytes, AddrPort | None]] = [(self._random(12), a) for a in udp]
        if trusted is None:
            sends.append((self._random(12), None))  # None: via DERP
        try:
            for txid, addr in sends:
                self._cli_pings[txid] = (fut, now)
                pkt = self._disco.seal(disco, Ping(txid=txid, node_key=self.node_public))
                self.counters.disco_tx += 1
                if addr is not None:
                    self._udp_send(pkt, addr)
                else:
                    self._derp_send(region, nk, pkt)
            self._do_actions(nk, actions)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            for txid, _ in sends:
                self._cli_pings.pop(txid, None)

    # ---- DERP -----------------------------------------------------------------------------

    def _ensure_derp(self, region_id: int) -> DerpClient:
        c = self._derps.get(region_id)
        if c is not None:
            return c
        region = self.derp_map.regions.get(region_id)
        if region is None:
            raise KeyError(f"DERP region {region_id} not in map")
        c = DerpClient(
            region,
            self._node,
            self._on_derp_event,
            use_http=self._use_http,
            logger=self._log,
            clock=self._clock,
            random=self._random,
            fwmark=self._fwmark,
        )
        self._derps[region_id] = c
        if self._tg is not None:
            self._derp_tasks[region_id] = self._tg.create_task(c.run(), name=f"derp-{region_id}")
        return c

    def _close_idle_derps(self, now: float) -> None:
        """Non-home regions are closed after DERP_INACTIVE_CLEANUP of no sends (magicsock/derp.go)."""
        for rid in list(self._derps):
            if rid != self.home_derp and now - self._derp_last_use.get(rid, now) > DERP_INACTIVE_CLEANUP:
                self._close_derp(rid)

    def _close_derp(self, region_id: int) -> None:
        c = self._derps.pop(region_id, None)
        if c is not None:
            c.close()
        t = self._derp_tasks.pop(region_id, None)
        if t is not None:
            t.cancel()

    def _derp_send(self, region_id: int, dst: bytes, pkt: bytes) -> None:
        if self._closed:
            return
        rid = region_id or self.home_derp
        self._derp_last_use[rid] = self._clock()
        if not rid or rid not in self.derp_map.regions:
            self.counters.derp_tx_dropped += 1
            return
        if self._ensure_derp(rid).send_packet(dst, pkt):
            self.counters.derp_tx += 1
        else:
            self.counters.derp_tx_dropped += 1

    def _on_derp_event(self, region_id: int, ev: dp.Event) -> None:
        if isinstance(ev, dp.PacketReceived):
            self.counters.derp_rx += 1
            if dbox.looks_like_disco(ev.data):
                self._handle_disco(ev.data, None, ev.src, region_id)
                return
            with self._lock:
                p = self._peers.get(ev.src)
                if p is not None:
                    p.path.stats["rx_derp_packets"] += 1
                    p.path.stats["rx_bytes"] += len(ev.data)
            if not self.bind.deliver(ev.data, PeerEndpoint(ev.src)):
                self.counters.rx_queue_dropped += 1

    # ---- send path (any thread) ---------------------------------------------------------------

    def send_wireguard(self, parts: list, endpoint: object, seg: int = 0) -> None:
        """Send WireGuard datagrams (Bind.send semantics: seg > 0 = a GSO run of seg-byte
        datagrams in the concatenation of `parts`) over the peer's current path."""
        if self._closed:
            return
        if isinstance(endpoint, UdpEndpoint):
            addr = (str(endpoint.ip), endpoint.port)
            nk = self._addr_peer.get(addr)
            if nk is None:  # not a peer we know: plain UDP (e.g. a WireGuard-only peer)
                self._udp_send_run(parts, seg, addr)
                return
        else:
            nk = endpoint.node_key if isinstance(endpoint, PeerEndpoint) else None
        now = self._clock()
        actions = []
        size = sum(len(d) for d in parts)
        n = -(-size // seg) if seg else len(parts)
        with self._lock:
            p = self._peers.get(nk) if nk is not None else None
            if p is None:
                self.counters.send_no_peer += 1
                if nk is not None and self._loop is not None:
                    # a netmap peer whose disco key control has not sent yet (it registered a moment
                    # ago): no path state, but our home DERP still reaches it (a handshake response
                    # dropped here would cost the peer a 5 s handshake retry)
                    for d in _split(parts, seg):
                        self._loop.call_soon_threadsafe(self._derp_send, 0, nk, d)
                return
            path = p.path
            udp, via_derp = path.addr_for_send(now)
            noted = now - p.last_note >= NOTE_SEND_EVERY
            if noted:
                p.last_note = now
                actions = path.note_send(now)
            path.stats["tx_bytes"] += size
            if udp is not None and not via_derp:
                path.stats["tx_direct_packets"] += n
            else:
                path.stats["tx_derp_packets"] += n
            region = p.cfg.home_derp
        if udp is not None:
            self._udp_send_run(parts, seg, udp)
        if via_derp and self._loop is not None:
            for d in _split(parts, seg):
                self._loop.call_soon_threadsafe(self._derp_send, region, nk, d)
        if noted and self._loop is not None:
            # also wakes the timer loop so a new heartbeat deadline is seen
            self._loop.call_soon_threadsafe(self._do_actions, nk, actions)

    def _udp_send_run(self, parts: list, seg: int, addr: AddrPort) -> None:
        """One GSO sendmsg for a run when the kernel can, else one sendto per datagram."""
        sock = self._sock
        if sock is None:
            return
        if seg and self.gso:
            try:
                sa = self._sockaddr(addr)
                if sa is None:
                    self.counters.send_errors += 1
                    return
                sock.sendmsg(parts, [(SOL_UDP, UDP_SEGMENT, seg.to_bytes(2, "little"))], 0, sa)
                self.counters.udp_tx += 1
                return
            except OSError as e:
                if e.errno != errno.EIO:
                    self.counters.send_errors += 1
                    return
                self.gso = False  # no checksum offload on this route: fall back for good
        for d in _split(parts, seg):
            self._udp_send(d, addr)

    def _udp_send(self, data: bytes, addr: AddrPort) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sa = self._sockaddr(addr)
            if sa is None:
                self.counters.send_errors += 1
                return
            sock.sendto(data, sa)
            self.counters.udp_tx += 1
        except BlockingIOError:
            self.counters.send_errors += 1
        except OSError as e:
            if e.errno not in (
                errno.ENETUNREACH,
                errno.EHOSTUNREACH,
                errno.EPERM,
                errno.EINVAL,
                errno.ECONNREFUSED,
                errno.EBADF,
                errno.EADDRNOTAVAIL,
            ):
                self._log.debug("udp send to %s: %s", _fmt(addr), e)
            self.counters.send_errors += 1

    # ---- receive path ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        buf = bytearray(65536)
        mv = memoryview(buf)
        loop = self._loop
        cmsg_space = socket.CMSG_SPACE(4)
        while not self._closed:
            try:
                n, anc, _flags, sa = sock.recvmsg_into([buf], cmsg_space)
            except OSError as e:
                if self._closed or e.errno == errno.EBADF:
                    return
                continue  # ICMP errors surface as ECONNREFUSED etc.
            if n == 0 and self._closed:
                return
            seg = n
            for level, typ, cdata in anc:
                if level == SOL_UDP and typ == UDP_GRO:
                    seg = int.from_bytes(cdata[:4], "little") or n
            ip = sa[0]
            if ip.startswith("::ffff:") and "." in ip:
                ip = ip[7:]
            elif "%" in ip:
                ip = ip.split("%", 1)[0]
            addr = (ip, sa[1])
            try:
                if seg < n and not _all_wireguard(buf, n, seg):
                    # a GRO batch holding something else: demux datagram by datagram
                    for off in range(0, n, seg):
                        self._demux(bytes(mv[off : min(n, off + seg)]), addr, loop)
                    continue
                self._demux(bytes(mv[:n]), addr, loop, seg if seg < n else 0)
            except RuntimeError:  # the loop is closed: we are shutting down
                return

    def _demux(self, data: bytes, addr: AddrPort, loop, seg: int = 0) -> None:
        """STUN | disco -> admission, then the loop's batch; WireGuard (a datagram or a GRO run) -> the Bind."""
        n = len(data)
        c = self.counters
        c.udp_rx += 1
        if not seg:
            if not usable_candidate(addr):
                c.disco_dropped += 1  # arrived through our own tunnel: never a path
                return
            if stun.is_binding_response(data):
                if self._netcheck_run is None:
                    c.stun_unsolicited += 1
                    return
                self._to_loop(data, addr, True, loop)
                return
            if dbox.looks_like_disco(data):
                if dbox.sender_key(data) not in self._by_disco:  # junk or a stranger: no loop work
                    c.disco_dropped += 1
                    return
                self._to_loop(data, addr, False, loop)
                return
        nk = self._addr_peer.get(addr)
        if nk is None:
            c.wg_unknown_src += 1
            # addr is already normalised (no ::ffff:, no %scope): UdpEndpoint.ip is that text
            ok = self.bind.deliver(data, UdpEndpoint(addr[0], addr[1]), seg)
        else:
            p = self._peers.get(nk)
            if p is not None:  # counters only: no lock on the hot path (races cost a count at worst)
                st = p.path.stats
                st["rx_direct_packets"] += -(-n // seg) if seg else 1
                st["rx_bytes"] += n
            ok = self.bind.deliver(data, p.endpoint if p is not None else PeerEndpoint(nk), seg)
        if not ok:
            c.rx_queue_dropped += 1
        if self.bind.peak > c.rx_queue_peak:
            c.rx_queue_peak = self.bind.peak

    def _to_loop(self, data: bytes, addr: AddrPort, is_stun: bool, loop) -> None:
        """Reader thread: admit a disco/STUN datagram (per-source rate, bounded batch); one loop wakeup per batch."""
        if not self._ctl_limiter.allow(addr[0], self._clock()):
            self.counters.ctl_rate_limited += 1
            return
        r = self._ctl.put((data, addr, is_stun))
        if r == FULL:
            self.counters.ctl_queue_dropped += 1
        elif r == FIRST:
            loop.call_soon_threadsafe(self._drain_ctl)

    def _drain_ctl(self) -> None:
        """Loop: handle every disco/STUN datagram queued since the last drain; bad input is a counted drop."""
        items = self._ctl.take()
        self.counters.ctl_queue_peak = self._ctl.peak
        for data, addr, is_stun in items:
            if self._closed:
                return
            try:
                if is_stun:
                    self._handle_stun(data)
                else:
                    self._handle_disco(data, addr, None, 0)
            except Exception:  # noqa: BLE001 - one bad datagram must not stop the rest
                self.counters.disco_dropped += 1
                self._log.debug("magicsock: dropped a disco/STUN datagram from %s", _fmt(addr), exc_info=True)

    def _handle_stun(self, data: bytes) -> None:
        self.counters.stun_rx += 1
        run = self._netcheck_run
        if run is not None and run.handle_response(data, self._clock()) and run.done():
            self._netcheck_done.set()

    def _handle_disco(self, data: bytes, addr: AddrPort | None, derp_src: bytes | None, region: int) -> None:
        """Disco from UDP (`addr`) or DERP (`derp_src` node key, `region`)."""
        with self._lock:
            known = set(self._by_disco)
        got = self._disco.open(data, known=known.__contains__)
        if got is None:
            self.counters.disco_dropped += 1
            return
        self.counters.disco_rx += 1
        sender, msg = got
        now = self._clock()
        actions = []
        with self._lock:
            nks = self._by_disco.get(sender, [])
            if derp_src is not None:
                # via DERP the node key is authenticated by the relay: it must match the netmap
                if derp_src not in nks:
                    self.counters.disco_dropped += 1
                    return
                nk = derp_src
            elif isinstance(msg, Ping) and msg.node_key in nks:
                nk = msg.node_key
            elif len(nks) == 1:
                nk = nks[0]
            else:
                self.counters.disco_dropped += 1
                return
            peer = self._peers[nk]
            if isinstance(msg, Ping):
                if addr is not None:  # a candidate only; bound to the peer once our ping to it is ponged
                    actions = peer.path.handle_ping_from(addr, now)
            elif isinstance(msg, Pong):
                cli = self._cli_pings.pop(msg.txid, None)
                if cli is not None and not cli[0].done():
                    cli[0].set_result(PingReply(max(0.0, now - cli[1]), addr, region if addr is None else 0))
                if addr is None:
                    return  # path pings go over UDP only; DERP pongs answer ping()
                if peer.path.handle_pong(msg.txid, addr, now):
                    self._addr_peer[addr] = nk  # verified: our TxID came back from this address
            elif isinstance(msg, CallMeMaybe):
                if addr is not None:
                    self.counters.cmm_via_udp_dropped += 1  # only valid via DERP
                    return
                self.counters.cmm_endpoints_dropped += msg.dropped  # beyond the parser's cap
                actions = peer.path.handle_call_me_maybe(msg.endpoints, now)
            region_for_peer = peer.cfg.home_derp or region
        if isinstance(msg, Ping):
            pong = Pong(txid=msg.txid, src=addr if addr is not None else (C.DERP_MAGIC_IP, region))
            pkt = self._disco.seal(sender, pong)
            self.counters.disco_tx += 1
            if addr is not None:
                self._udp_send(pkt, addr)
            else:
                self._derp_send(region or region_for_peer, nk, pkt)
        self._do_actions(nk, actions)
        self._kick()

    # ---- actions / timers -----------------------------------------------------------------------

    def _do_actions(self, nk: bytes, actions: list) -> None:
        for a in actions:
            self._do_action(nk, a)
        self._kick()

    def _do_action(self, nk: bytes, action) -> None:
        p = self._peers.get(nk)
        if p is None:
            return
        if isinstance(action, SendPing):
            pkt = self._disco.seal(p.cfg.disco_key, Ping(txid=action.txid, node_key=self.node_public))
            self.counters.disco_tx += 1
            self._udp_send(pkt, action.addr)
        elif isinstance(action, SendCallMeMaybe):
            self._restun_if_stale()
            eps = tuple(parse_addrport(e.addr) for e in self.endpoints())
            if not eps:
                return
            pkt = self._disco.seal(p.cfg.disco_key, CallMeMaybe(endpoints=eps))
            self.counters.disco_tx += 1
            self._derp_send(p.cfg.home_derp, nk, pkt)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _timer_loop(self) -> None:
        while not self._closed:
            now = self._clock()
            due: list[tuple[bytes, list]] = []
            nxt = None
            with self._lock:
                for nk, p in self._peers.items():
                    t = p.path.get_timer()
                    if t is not None and t <= now:
                        acts = p.path.handle_timer(now)
                        if acts:
                            due.append((nk, acts))
                        t = p.path.get_timer()
                    if t is not None and (nxt is None or t < nxt):
                        nxt = t
            for nk, acts in due:
                for a in acts:
                    self._do_action(nk, a)
            self._close_idle_derps(now)
            if now >= self._addr_prune_at:
                self._addr_prune_at = now + C.ADDR_PRUNE_INTERVAL
                self._prune_addr_peer()
            # idle: wake rarely (idle DERP cleanup only); else at the next path timer
            timeout = 30.0 if nxt is None else min(30.0, max(0.02, nxt - self._clock()))
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except asyncio.TimeoutError:
                pass

    def _prune_addr_peer(self) -> None:
        """Forget address bindings that are no longer candidates of their peer (bounded by MAX_CANDIDATES each)."""
        with self._lock:
            keep = {
                a: k for a, k in self._addr_peer.items() if k in self._peers and a in self._peers[k].path.candidates
            }
            if len(keep) != len(self._addr_peer):
                self._addr_peer = keep  # swapped whole: the reader thread reads it without the lock


def _split(parts: list, seg: int) -> list[bytes]:
    """Bind.send parts -> individual datagrams."""
    if not seg:
        return [bytes(d) for d in parts]
    data = b"".join(bytes(d) for d in parts)
    return [data[o : o + seg] for o in range(0, len(data), seg)]


def _all_wireguard(buf: bytearray, n: int, seg: int) -> bool:
    """Every datagram of a GRO run starts like a WireGuard message (type 1-4, then zeros):
    then it cannot be STUN (byte 1 == 0x01) or disco (starts with 'T')."""
    for off in range(0, n, seg):
        if not 1 <= buf[off] <= 4 or buf[off + 1] != 0:
            return False
    return True
