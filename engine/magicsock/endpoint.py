"""Per-peer path state machine (sans-IO): DERP first, disco pings, direct upgrade, fallback.

Theory of operation (mirrors tailscale's magicsock endpoint):

  * Sending with no *trusted* direct address goes to DERP (and to the untrusted best address,
    if any). It also starts a discovery round: a disco Ping to every candidate endpoint not
    pinged within DISCO_PING_INTERVAL, plus one CallMeMaybe via DERP so the peer pings back
    (simultaneous open through both NATs).
  * A Pong makes its source a candidate with measured latency; the best one (lowest latency,
    with small bonuses for private/loopback addresses) becomes `best_addr`, trusted until
    now + TRUST_UDP_ADDR_DURATION. Trusted -> send only over UDP.
  * While data flows (SESSION_ACTIVE_TIMEOUT), heartbeat-ping best_addr every
    HEARTBEAT_INTERVAL; each pong renews trust. No pongs -> trust lapses -> DERP again, and
    discovery continues every DISCO_PING_INTERVAL until a path answers again.
  * Every UPGRADE_INTERVAL a full round looks for something better if latency > 5 ms.

Limits (input from the network is bounded, drops are counted in `counters`):

  * a CallMeMaybe contributes at most MAX_CMM_ENDPOINTS candidates and replaces the previous
    CallMeMaybe's (tailscale's mark-and-sweep); a peer has at most MAX_CANDIDATES candidates;
  * pings to one peer's addresses come from a token bucket (PEER_PING_BURST, PEER_PING_RATE);
  * an address becomes a path (best_addr) only through a Pong carrying the TxID of a ping we
    sent *to that address*, received *from that address*.

Inputs carry `now`; outputs are Action values the adapter performs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.magicsock import constants as C
from engine.magicsock.limits import TokenBucket
from engine.net.tsaddr import CGNAT_V4, TAILNET_V6

AddrPort = tuple[str, int]
PING_BACK_MIN_INTERVAL = 1.0  # seconds: rate limit for answering a peer's ping with our own


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a disco Ping with `txid` to `addr` over UDP."""

    addr: AddrPort
    txid: bytes


@dataclass(frozen=True, slots=True)
class SendCallMeMaybe:
    """Send our endpoints to the peer as a CallMeMaybe via DERP."""


Action = SendPing | SendCallMeMaybe


@dataclass
class PathCounters:
    """Drops by the path cores (MagicCounters extends this, so one instance can count for all peers)."""

    cmm_endpoints_dropped: int = 0  # CallMeMaybe endpoints beyond MAX_CMM_ENDPOINTS
    candidates_dropped: int = 0  # at MAX_CANDIDATES: oldest non-netmap evicted, or the new one refused
    pings_rate_limited: int = 0  # pings not sent: the peer's ping bucket was empty
    pong_addr_mismatch: int = 0  # Pong with a known TxID from another address than we pinged


@dataclass
class Candidate:
    addr: AddrPort
    source: str  # "netmap", "cmm" (CallMeMaybe) or "ping" (peer pinged us from it)
    last_ping: float | None = None
    last_pong: float | None = None
    latency: float | None = None
    last_heard: float = 0.0


@dataclass
class PathStatus:
    """Snapshot of one peer's path, for status APIs."""

    path: str  # "direct" or "derp"
    addr: str  # "ip:port" of the direct path ("" when on DERP)
    derp_region: int
    latency_ms: float | None
    last_pong_age: float | None
    best_addr: str
    trusted_for: float
    candidates: list[str]
    pings_sent: int
    pongs_received: int
    direct_since: float | None
    tx_direct_packets: int = 0
    tx_derp_packets: int = 0
    rx_direct_packets: int = 0
    rx_derp_packets: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0


def _fmt(a: AddrPort) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


TAILSCALE_V4 = CGNAT_V4  # tsaddr.CGNATRange
TAILSCALE_V6 = TAILNET_V6  # tsaddr.TailscaleULARange


def usable_candidate(addr: AddrPort) -> bool:
    """Can `addr` be a direct path? Never one of the tailnet's own addresses: a path "through"
    the tunnel would loop WireGuard into itself (tailscale ignores such endpoints too)."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast or not 0 < addr[1] < 65536:
        return False
    return ip not in (TAILSCALE_V4 if ip.version == 4 else TAILSCALE_V6)


def addr_points(addr: AddrPort) -> int:
    """Static preference bonus for an address class (betterAddr): loopback > link-local > private."""
    ip = ipaddress.ip_address(addr[0])
    pts = 0
    if ip.is_loopback:
        pts += 50
    elif ip.is_link_local:
        pts += 30
    elif ip.is_private:
        pts += 20
    if ip.version == 6:
        pts += 10
    return pts


def better_addr(new: AddrPort, new_lat: float, cur: AddrPort | None, cur_lat: float | None) -> bool:
    """Is `new` (with latency) better than `cur`? Latency improvement in %, plus class bonuses."""
    if cur is None or cur_lat is None:
        return True
    if new == cur:
        return False
    new_pts = addr_points(new)
    cur_pts = addr_points(cur)
    if new_lat < cur_lat and cur_lat > 0:
        new_pts += int(100 - new_lat * 100 / cur_lat)
    elif cur_lat < new_lat and new_lat > 0:
        cur_pts += int(100 - cur_lat * 100 / new_lat)
    # hysteresis: a bare 1-point latency win does not switch paths
    if new_pts == 1 and cur_pts == 0:
        return False
    return new_pts > cur_pts


@dataclass
class PeerPath:
    """Path selection for one peer; all methods are pure functions of their inputs and `now`."""

    node_key: bytes
    disco_key: bytes
    random: Callable[[int], bytes]
    home_derp: int = 0
    candidates: dict[AddrPort, Candidate] = field(default_factory=dict)
    pending: dict[bytes, tuple[AddrPort, float]] = field(default_factory=dict)
    best_addr: AddrPort | None = None
    best_latency: float | None = None
    trust_until: float = 0.0
    last_send: float | None = None
    last_full_ping: float | None = None
    last_call_me_maybe: float | None = None
    next_heartbeat: float | None = None
    direct_since: float | None = None
    idle: bool = True  # no session: no heartbeat/session timers armed
    pings_sent: int = 0
    pongs_received: int = 0
    counters: PathCounters = field(default_factory=PathCounters)
    ping_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(C.PEER_PING_RATE, C.PEER_PING_BURST))
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "tx_direct_packets": 0,
            "tx_derp_packets": 0,
            "rx_direct_packets": 0,
            "rx_derp_packets": 0,
            "tx_bytes": 0,
            "rx_bytes": 0,
        }
    )

    # ---- configuration ------------------------------------------------------------------

    def set_netmap_endpoints(self, endpoints: Iterable[AddrPort], now: float) -> list[Action]:
        """Endpoints from control. New ones are pinged at once if a session is active."""
        wanted = {(str(ipaddress.ip_address(a)), int(p)) for a, p in endpoints}
        wanted = {a for a in wanted if usable_candidate(a)}
        new = False
        for addr in wanted:
            c = self.candidates.get(addr)
            if c is None:
                new = self._add_candidate(addr, "netmap", now) is not None or new
            elif c.source != "netmap":
                c.source = "netmap"  # control vouches for it now: never expired or evicted
        for addr in [a for a, c in self.candidates.items() if c.source == "netmap" and a not in wanted]:
            if addr != self.best_addr:
                del self.candidates[addr]
        if new and self._session_active(now):
            return self._discovery(now, force=False)
        return []

    # ---- data path ----------------------------------------------------------------------

    def trusted(self, now: float) -> bool:
        return self.best_addr is not None and now < self.trust_until

    def addr_for_send(self, now: float) -> tuple[AddrPort | None, bool]:
        """(udp address or None, also_via_derp)."""
        if self.trusted(now):
            return self.best_addr, False
        return self.best_addr, True

    def note_send(self, now: float) -> list[Action]:
        """Outbound data for this peer: starts discovery if we have no trusted direct path."""
        first = not self._session_active(now)
        self.last_send = now
        self.idle = False
        if self.trusted(now):
            if first or self.next_heartbeat is None:
                self.next_heartbeat = now + C.HEARTBEAT_INTERVAL
            return []
        return self._discovery(now, force=False)

    def note_recv(self, addr: AddrPort | None, now: float) -> None:
        """Inbound WireGuard data from `addr` (None = via DERP); keeps candidates fresh."""
        if addr is not None and addr in self.candidates:
            self.candidates[addr].last_heard = now

    # ---- disco input --------------------------------------------------------------------

    def handle_ping_from(self, addr: AddrPort, now: float) -> list[Action]:
        """The peer pinged us over UDP from `addr`: it becomes a candidate (NAT-mapped source).

        If we have no trusted path, ping it straight back: that source is open toward us right
        now, so this usually completes the path without waiting for the next round."""
        if not usable_candidate(addr):
            return []
        c = self.candidates.get(addr)
        if c is None:
            c = self._add_candidate(addr, "ping", now)
            if c is None:
                return []
        else:
            c.last_heard = now
        if not self.trusted(now) and (c.last_ping is None or now - c.last_ping >= PING_BACK_MIN_INTERVAL):
            return self._pings([c], now)
        return []

    def handle_call_me_maybe(self, endpoints: Iterable[AddrPort], now: float) -> list[Action]:
        """Peer asked us (via DERP) to ping its endpoints now: the simultaneous-open punch.

        At most MAX_CMM_ENDPOINTS are taken (the rest counted); the message replaces the previous
        CallMeMaybe's endpoints (tailscale), and pings go out as the peer's ping bucket allows."""
        eps: list[AddrPort] = []
        for addr in endpoints:
            try:
                addr = (str(ipaddress.ip_address(addr[0])), int(addr[1]))
            except (ValueError, TypeError, IndexError):
                continue
            if usable_candidate(addr) and addr not in eps:
                eps.append(addr)
        if len(eps) > C.MAX_CMM_ENDPOINTS:
            self.counters.cmm_endpoints_dropped += len(eps) - C.MAX_CMM_ENDPOINTS
            del eps[C.MAX_CMM_ENDPOINTS :]
        keep = set(eps)
        for addr in [a for a, c in self.candidates.items() if c.source == "cmm" and a not in keep]:
            if addr != self.best_addr:
                del self.candidates[addr]
        for addr in eps:
            c = self.candidates.get(addr)
            if c is None:
                self._add_candidate(addr, "cmm", now)
            else:
                c.last_heard = now
        return self._pings(list(self.candidates.values()), now)

    def handle_pong(self, txid: bytes, src: AddrPort, now: float) -> bool:
        """A Pong arrived over UDP from `src`; True if it answered our ping *to `src`*.

        Only then is `src` verified (reachable, and the peer holds the disco key: the TxID was
        inside the box we sealed to it). A known TxID from another source is counted and left
        pending, so a replayed pong cannot cancel the genuine one."""
        pend = self.pending.get(txid)
        if pend is None or not usable_candidate(src):
            return False
        addr, sent = pend
        if addr != src:
            self.counters.pong_addr_mismatch += 1
            return False
        del self.pending[txid]
        latency = max(0.0, now - sent)
        self.pongs_received += 1
        c = self.candidates.get(addr)
        if c is None:  # pinged, then forgotten (expired/evicted) before the pong
            c = self._add_candidate(addr, "ping", now)
            if c is None:
                return True
        c.last_pong = now
        c.latency = latency
        c.last_heard = now
        if addr == self.best_addr:
            self.best_latency = latency
            if not self.trusted(now):
                self.direct_since = now
            self.trust_until = now + C.TRUST_UDP_ADDR_DURATION
        elif better_addr(addr, latency, self.best_addr if self.trusted(now) else None, self.best_latency):
            self.best_addr = addr
            self.best_latency = latency
            self.trust_until = now + C.TRUST_UDP_ADDR_DURATION
            self.direct_since = now
        if self.trusted(now) and self.next_heartbeat is None and self._session_active(now):
            self.next_heartbeat = now + C.HEARTBEAT_INTERVAL
        return True

    # ---- timers -------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        ts = [sent + C.PING_TIMEOUT for _, sent in self.pending.values()]
        if self.last_send is not None and not self.idle:
            if self.next_heartbeat is not None:
                ts.append(self.next_heartbeat)
            elif self.best_addr is not None and self.trust_until:
                ts.append(self.trust_until)
            ts.append(self.last_send + C.SESSION_ACTIVE_TIMEOUT)
        return min(ts) if ts else None

    def handle_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        for txid, (addr, sent) in list(self.pending.items()):
            if now >= sent + C.PING_TIMEOUT:
                del self.pending[txid]
                if addr == self.best_addr and not self.trusted(now):
                    # our (already untrusted) best path did not answer: forget it
                    self.best_addr = None
                    self.best_latency = None
                    self.direct_since = None
        if not self._session_active(now):
            self.next_heartbeat = None
            self.idle = True
            return out
        if self.next_heartbeat is not None and now >= self.next_heartbeat:
            self.next_heartbeat = now + C.HEARTBEAT_INTERVAL
            if not self.trusted(now):
                out += self._discovery(now, force=False)
            elif (
                self.best_latency is not None
                and self.best_latency > C.GOOD_ENOUGH_LATENCY
                and (self.last_full_ping is None or now - self.last_full_ping >= C.UPGRADE_INTERVAL)
            ):
                out += self._discovery(now, force=True)
            else:
                out += self._pings([self.candidates[self.best_addr]], now)
        elif self.next_heartbeat is None:
            self.next_heartbeat = now + C.HEARTBEAT_INTERVAL
            if not self.trusted(now):
                out += self._discovery(now, force=False)
        return out

    # ---- internals ----------------------------------------------------------------------

    def _session_active(self, now: float) -> bool:
        return self.last_send is not None and now - self.last_send < C.SESSION_ACTIVE_TIMEOUT

    def _add_candidate(self, addr: AddrPort, source: str, now: float) -> Candidate | None:
        """A new candidate, evicting the least recently heard non-netmap one when at MAX_CANDIDATES;
        None (counted) if every candidate is from the netmap or is the best address."""
        if len(self.candidates) >= C.MAX_CANDIDATES:
            victims = [c for a, c in self.candidates.items() if c.source != "netmap" and a != self.best_addr]
            if not victims:
                self.counters.candidates_dropped += 1
                return None
            del self.candidates[min(victims, key=lambda c: c.last_heard).addr]
            self.counters.candidates_dropped += 1
        c = self.candidates[addr] = Candidate(addr=addr, source=source, last_heard=now)
        return c

    def _pings(self, cands: Iterable[Candidate], now: float) -> list[Action]:
        """Ping each of `cands` while the peer's ping bucket has tokens; the rest are counted."""
        out: list[Action] = []
        for c in cands:
            if self.ping_bucket.take(now):
                out.append(self._ping(c, now))
            else:
                self.counters.pings_rate_limited += 1
        return out

    def _ping(self, c: Candidate, now: float) -> SendPing:
        txid = self.random(12)
        c.last_ping = now
        self.pending[txid] = (c.addr, now)
        self.pings_sent += 1
        return SendPing(addr=c.addr, txid=txid)

    def _discovery(self, now: float, force: bool) -> list[Action]:
        """Ping every candidate not pinged within DISCO_PING_INTERVAL; CallMeMaybe once per round."""
        self._expire_candidates(now)
        due = [
            c
            for c in self.candidates.values()
            if force or c.last_ping is None or now - c.last_ping >= C.DISCO_PING_INTERVAL
        ]
        out: list[Action] = self._pings(due, now)
        if out:
            self.last_full_ping = now
        if self.last_call_me_maybe is None or now - self.last_call_me_maybe >= C.DISCO_PING_INTERVAL:
            if not self.trusted(now):
                self.last_call_me_maybe = now
                out.append(SendCallMeMaybe())
        return out

    def _expire_candidates(self, now: float) -> None:
        for addr, c in list(self.candidates.items()):
            if c.source != "netmap" and addr != self.best_addr and now - c.last_heard > C.CANDIDATE_EXPIRY:
                del self.candidates[addr]

    def status(self, now: float) -> PathStatus:
        trusted = self.trusted(now)
        last_pong = None
        if self.best_addr is not None and self.best_addr in self.candidates:
            lp = self.candidates[self.best_addr].last_pong
            last_pong = None if lp is None else now - lp
        return PathStatus(
            path="direct" if trusted else "derp",
            addr=_fmt(self.best_addr) if trusted and self.best_addr else "",
            derp_region=self.home_derp,
            latency_ms=None if self.best_latency is None or not trusted else round(self.best_latency * 1000, 3),
            last_pong_age=last_pong,
            best_addr=_fmt(self.best_addr) if self.best_addr else "",
            trusted_for=max(0.0, self.trust_until - now),
            candidates=sorted(_fmt(a) for a in self.candidates),
            pings_sent=self.pings_sent,
            pongs_received=self.pongs_received,
            direct_since=self.direct_since if trusted else None,
            **self.stats,
        )
