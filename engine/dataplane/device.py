"""The userspace WireGuard Device: TUN + UDP Bind + the wg core, run by blocking worker threads.

Public API (stable; used by the UAPI helper and the control plane; all methods thread-safe)::

    dev = Device(name, *, mtu=1420, tun=None, bind=None, logger=None, timings=None, tso=False)
    dev.up()                      # create TUN (unless given) and open the bind; start workers
    dev.close()                   # idempotent: workers joined, socket closed, TUN removed
    dev.set_private_key(key)      # 32 raw bytes, or None to clear (drops all sessions)
    dev.private_key, dev.public_key   # 32 bytes or None
    dev.set_listen_port(port)     # 0 = pick one; rebinds if up; read back via dev.listen_port
    dev.set_fwmark(mark)          # SO_MARK on the UDP socket(s); 0 clears; read back via dev.fwmark
    dev.upsert_peer(public_key, *, endpoint=UNCHANGED, allowed_ips=None,
                    replace_allowed_ips=False, preshared_key=UNCHANGED,
                    persistent_keepalive=UNCHANGED)
    dev.remove_peer(public_key)
    dev.remove_all_peers()
    dev.peers() -> list[PeerStatus]
    dev.counters() -> dict[str, int]  # drops by reason ("drop_<reason>") and event counts

Types: keys are 32-byte ``bytes`` (anything ``bytes(k)`` turns into 32 bytes is accepted);
``endpoint`` is an endpoint object of the bind (``UdpEndpoint`` for the kernel UDP bind),
``"ip:port"`` / ``"[ip6]:port"`` text (parsed by ``bind.parse_endpoint`` when it has one),
an ``(ip, port)`` tuple or ``None`` (clear); ``allowed_ips`` is an iterable of ``ipaddress``
networks or CIDR text, added to the peer's set (or replacing it when ``replace_allowed_ips``);
``preshared_key`` is 32 bytes or ``None`` (all zero); ``persistent_keepalive`` is seconds (0 or
``None`` = off; turning it on sends a keepalive at once). ``UNCHANGED`` leaves a field as it is.
``timings`` is ``engine.wg.constants.Timings`` (tests shorten REKEY_AFTER_TIME etc.).
``tso``: when the Device creates its own TUN, also let the kernel hand it 64 KiB TCP
super-packets that the Device segments (off by default: measured slower in Python, see
``offload``). ``peers()[i].endpoint`` follows roaming (the source of the latest authenticated
packet).

Errors: API misuse raises ``ValueError`` / ``RuntimeError``; nothing a peer sends ever raises:
it is dropped and counted under ``counters()["drop_<reason>"]``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import queue
import struct
import threading
import time
from typing import Any, Iterable

from cryptography.exceptions import InvalidTag

from engine.dataplane import offload
from engine.dataplane.endpoint import as_endpoint
from engine.wg.constants import Timings
from engine.wg.core import DeviceCore, Peer
from engine.wg.drops import DropReason
from engine.wg.keypair import Keypair

# Data-plane flow (one blocking thread each; asyncio is never involved):
#
#   tun-reader:  TUN read (batch of up to BATCH frames; TSO frames segmented) -> allowed-ips
#                route -> keypair -> encrypt_into one contiguous buffer -> one UDP GSO sendmsg
#                per run of equal-sized messages to one endpoint
#   udp-reader:  UDP recvmsg (GRO: many datagrams) -> type 4: index -> decrypt_into -> replay
#                -> source allowed-ips -> Coalescer -> one TUN writev per TCP super-packet;
#                types 1-3 -> bounded handshake queue (depth >= 1/8 => "under load": cookies)
#   handshake:   core.decrypt() on handshake messages; sends what the core queues
#   timers:      core.handle_timers() at core.next_deadline() (at least every 100 ms)
#
# The fast paths inline only the per-packet crypto of DeviceCore.encrypt/decrypt; the
# bookkeeping (timers, byte counts, roaming, last-minute rekey) is the core's note_sent /
# note_received, called once per peer per batch, and inner packets are checked by the core's
# inner_packet_length. Any case they do not cover (no session, rekey due, key confirmation,
# limits) goes through the core.

_HDR = struct.Struct("<IIQ")
_HDR_PACK_INTO = _HDR.pack_into
_NONCE = struct.Struct("<4xQ").pack
_from_bytes = int.from_bytes
_ZEROS = bytes(64)
_VNET = offload.VNET_HDR_LEN
_MSG_OVERHEAD = 32  # 16-byte header + 16-byte tag
_TRANSPORT_WORD = 4  # little-endian u32 of b"\x04\0\0\0"

BATCH = 64  # TUN frames per outbound batch
HANDSHAKE_QUEUE = 1024  # wireguard-go QueueHandshakeSize
UNDER_LOAD_DEPTH = HANDSHAKE_QUEUE // 8
TIMER_TICK = 0.1
UDP_GSO_MAX = 65000  # bytes of UDP payload per GSO sendmsg
UDP_GSO_SEGMENTS = 64
RECV_SLOT = 65536 + 64  # one UDP GRO batch
RECV_BATCHES = 4  # GRO batches gathered (without waiting) before one round of TUN writes


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()
"""Sentinel for ``upsert_peer`` keyword arguments that should keep their current value."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class PeerStatus:
    """A snapshot of one peer, as ``wg show`` / UAPI ``get`` report it."""

    public_key: bytes
    preshared_key: bytes | None
    endpoint: object | None
    allowed_ips: tuple[IPNetwork, ...]
    last_handshake: float | None  # unix time of the last completed handshake
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int  # seconds, 0 = off


def _key32(value: object, what: str) -> bytes:
    raw = bytes(value)  # type: ignore[call-overload]
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _networks(values: Iterable[object]) -> list[IPNetwork]:
    out = []
    for v in values:
        if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            out.append(v)
        else:
            out.append(ipaddress.ip_network(str(v), strict=False))
    return out


class _PeerLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"{self.extra['dev']}: {msg}", kwargs


class Device:
    """A WireGuard interface; see the module docstring for the API contract."""

    def __init__(
        self,
        name: str,
        *,
        mtu: int = 1420,
        tun: Any = None,
        bind: Any = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        timings: Timings | None = None,
        tso: bool = False,
    ) -> None:
        self.name = name
        self.mtu = mtu
        self._tun = tun
        self._own_tun = tun is None
        self._bind = bind
        self._tso = tso
        self._log = _PeerLog(logger or logging.getLogger("engine.dataplane"), {"dev": name})
        self._timings = timings or Timings()
        self._lock = threading.RLock()
        self._listen_port = 0
        self._fwmark = 0
        self._private_key: bytes | None = None
        self._core = DeviceCore(
            None, wall_clock=time.time, timings=self._timings, mtu=mtu, on_outgoing=self._on_outgoing
        )
        self._counters: dict[str, int] = {}
        self._closed = False
        self._running = False
        self._threads: list[threading.Thread] = []
        self._timer_wake = threading.Event()
        self._hs_queue: queue.Queue = queue.Queue(HANDSHAKE_QUEUE)
        self._route_cache: dict[bytes, Peer] = {}  # destination address -> peer; cleared on any change
        t = self._timings
        self._reject_time = t.reject_after_time
        self._rekey_msgs = t.rekey_after_messages
        self._reject_msgs = t.reject_after_messages

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def core(self) -> DeviceCore:
        """The protocol core (for tests and status; do not mutate it behind the Device's back)."""
        return self._core

    @property
    def tun(self) -> Any:
        return self._tun

    @property
    def bind(self) -> Any:
        return self._bind

    def up(self) -> None:
        """Create the TUN (unless injected), open the bind on ``listen_port`` and start workers."""
        with self._lock:
            if self._closed:
                raise RuntimeError("device closed")
            if self._running:
                return
            try:
                if self._tun is None:
                    from engine.dataplane.tun_linux import LinuxTun

                    self._tun = LinuxTun.create(self.name, mtu=self.mtu, offload=True, tso=self._tso)
                if self._bind is None:
                    from engine.dataplane.bind import UdpBind

                    self._bind = UdpBind()
                if self._fwmark:
                    self._bind.set_fwmark(self._fwmark)
                self._listen_port = self._bind.open(self._listen_port)
            except BaseException:
                self._close_io()
                raise
            self._running = True
            for name, fn in (
                ("tun", self._tun_loop),
                ("udp", self._udp_loop),
                ("handshake", self._handshake_loop),
                ("timers", self._timer_loop),
            ):
                th = threading.Thread(target=self._guard, args=(fn,), name=f"{self.name}-{name}", daemon=True)
                self._threads.append(th)
                th.start()
        self._log.debug("up: listen port %d, mtu %d", self._listen_port, self.mtu)

    def close(self) -> None:
        """Stop workers, close the socket and remove the TUN; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._running = False
        self._timer_wake.set()
        try:
            self._hs_queue.put_nowait(None)
        except queue.Full:
            pass
        self._close_io()
        for th in self._threads:
            if th is not threading.current_thread():
                th.join(timeout=5)
        self._threads.clear()
        self._core.remove_all_peers()
        self._core.set_private_key(None)
        self._private_key = None

    def _close_io(self) -> None:
        if self._bind is not None:
            try:
                self._bind.close()
            except OSError:
                pass
        if self._tun is not None:
            try:
                self._tun.close()
            except OSError:
                pass

    def __enter__(self) -> "Device":
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception:  # a bug: keep it visible, never silently kill the data plane
            self._log.exception("worker %s crashed", threading.current_thread().name)
            self._count("worker_crashed")

    # -- configuration ---------------------------------------------------------------------
    @property
    def listen_port(self) -> int:
        return self._listen_port

    @property
    def fwmark(self) -> int:
        return self._fwmark

    @property
    def private_key(self) -> bytes | None:
        """The configured private key (for UAPI ``get``; never log it)."""
        return self._private_key

    @property
    def public_key(self) -> bytes | None:
        pk = self._core.public_key
        return None if pk is None else bytes(pk)

    def set_private_key(self, key: bytes | None) -> None:
        raw = None if key is None else _key32(key, "private key")
        if raw is not None and raw == bytes(32):
            raw = None
        with self._lock:
            self._core.set_private_key(raw, time.monotonic())
            self._private_key = raw

    def set_listen_port(self, port: int) -> None:
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError(f"listen port {port} out of range")
        with self._lock:
            if self._running and port != self._listen_port:
                self._listen_port = self._bind.open(port)
            else:
                self._listen_port = port if not self._running else self._listen_port

    def set_fwmark(self, mark: int) -> None:
        mark = int(mark)
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError(f"fwmark {mark} out of range")
        with self._lock:
            self._fwmark = mark
            if self._running:
                self._bind.set_fwmark(mark)

    def _parse_endpoint(self, value: object) -> object:
        if isinstance(value, str) and self._bind is not None and hasattr(self._bind, "parse_endpoint"):
            return self._bind.parse_endpoint(value)
        return as_endpoint(value)

    def upsert_peer(
        self,
        public_key: bytes,
        *,
        endpoint: object = UNCHANGED,
        allowed_ips: Iterable[object] | None = None,
        replace_allowed_ips: bool = False,
        preshared_key: object = UNCHANGED,
        persistent_keepalive: object = UNCHANGED,
    ) -> None:
        pub = _key32(public_key, "public key")
        nets = _networks(allowed_ips) if allowed_ips is not None else []
        kw: dict[str, Any] = {}
        if endpoint is not UNCHANGED:
            kw["endpoint"] = None if endpoint is None else self._parse_endpoint(endpoint)
        if preshared_key is not UNCHANGED:
            kw["preshared_key"] = None if preshared_key is None else _key32(preshared_key, "preshared key")
        if persistent_keepalive is not UNCHANGED:
            ka = int(persistent_keepalive or 0)
            if not 0 <= ka <= 65535:
                raise ValueError(f"persistent keepalive {ka} out of range")
            kw["persistent_keepalive"] = ka
        now = time.monotonic()
        with self._lock:
            core = self._core
            peer = core.peer(pub)
            if peer is None:
                peer = core.add_peer(pub, now=now)
            if kw:
                core.update_peer(peer, now=now, **kw)
            if replace_allowed_ips:
                core.set_allowed_ips(peer, nets)
            else:
                for net in nets:
                    core.add_allowed_ip(peer, net)
            self._route_cache = {}
        self._flush_outgoing()

    def remove_peer(self, public_key: bytes) -> None:
        with self._lock:
            self._core.remove_peer(_key32(public_key, "public key"))
            self._route_cache = {}

    def remove_all_peers(self) -> None:
        with self._lock:
            self._core.remove_all_peers()
            self._route_cache = {}

    def peers(self) -> list[PeerStatus]:
        core = self._core
        with self._lock:
            return [
                PeerStatus(
                    bytes(p.public_key),
                    p.preshared_key,
                    p.endpoint,
                    tuple(core.allowed_ips.entries_for(p)),
                    p.last_handshake,
                    p.rx_bytes,
                    p.tx_bytes,
                    int(p.persistent_keepalive),
                )
                for p in core.peers()
            ]

    def counters(self) -> dict[str, int]:
        out = dict(self._core.counters())
        for k, v in list(self._counters.items()):
            out[k] = out.get(k, 0) + v
        return out

    def _count(self, key: str, n: int = 1) -> None:
        c = self._counters
        c[key] = c.get(key, 0) + n

    # -- sending what the core queued ----------------------------------------------------------
    def _on_outgoing(self) -> None:
        self._timer_wake.set()

    def _flush_outgoing(self) -> None:
        if not self._running or not self._core.has_outgoing:
            return
        for out in self._core.datagrams_to_send():
            self._send_one(out.data, out.addr)

    def _send_one(self, data: bytes, addr: object) -> None:
        if addr is None:
            self._count("drop_no_endpoint")
            return
        try:
            self._bind.send([data], addr)
        except OSError as e:
            self._count("send_errors")
            self._log.debug("send to %s failed: %s", addr, e)

    # -- timers --------------------------------------------------------------------------------
    def _timer_loop(self) -> None:
        core = self._core
        wake = self._timer_wake
        while self._running:
            now = time.monotonic()
            try:
                outs = core.handle_timers(now)
            except Exception:
                self._log.exception("timer handling failed")
                self._count("timer_errors")
                outs = []
            for out in outs:
                self._send_one(out.data, out.addr)
            d = core.next_deadline()
            timeout = TIMER_TICK if d is None else min(TIMER_TICK, max(0.0, d - time.monotonic()))
            wake.wait(timeout)
            wake.clear()

    # -- handshakes ----------------------------------------------------------------------------
    def _handshake_loop(self) -> None:
        q = self._hs_queue
        core = self._core
        while self._running:
            item = q.get()
            if item is None:
                return
            data, src = item
            try:
                r = core.decrypt(data, src, time.monotonic())
            except Exception:
                self._log.exception("handshake processing failed")
                self._count("drop_handshake_error")
                continue
            if r.__class__ is DropReason:
                self._log.debug("handshake from %s dropped: %s", src, r)
            elif r is not None:  # a transport packet routed here by the slow path
                self._write_packets([r[1]])
            self._flush_outgoing()

    # -- outbound: TUN -> UDP ------------------------------------------------------------------
    def _tun_loop(self) -> None:
        tun = self._tun
        core = self._core
        vnet = bool(getattr(tun, "vnet_hdr", False))
        tso = vnet and bool(getattr(tun, "tso", False))
        slot = (65536 + 128) if tso else (max(self.mtu, 1500) + 128)
        nslots = BATCH if not tso else 16
        inbuf = bytearray(slot * nslots)
        inmv = memoryview(inbuf)
        out = bytearray((self.mtu + 64) * BATCH + 65536)
        outmv = memoryview(out)
        read = tun.read_into
        lookup = core.allowed_ips.lookup_packet_dst
        mtu = self.mtu
        pkts: list = []
        while self._running:
            # 1. read a batch of frames (the first read blocks)
            pkts.clear()
            for i in range(nslots):
                base = i * slot
                n = read(inmv[base : base + slot - 32], i == 0)
                if n <= 0:
                    if n == 0 and i == 0 and not self._running:
                        return
                    if n == 0:
                        return
                    break
                if vnet:
                    if n <= _VNET:
                        self._count("drop_tun_short")
                        continue
                    if inbuf[base] or inbuf[base + 1]:  # flags / gso_type: needs segmenting
                        try:
                            segs = offload.segment(inmv[base : base + n])
                        except (ValueError, IndexError, struct.error):
                            self._count("drop_tun_bad_offload")
                            continue
                        for sgm in segs:
                            pkts.append(memoryview(bytearray(sgm + _ZEROS[:16])))
                        continue
                    pkts.append(inmv[base + _VNET : base + n + 16])  # + room for padding
                else:
                    pkts.append(inmv[base : base + n + 16])
            if not pkts:
                continue
            now = time.monotonic()
            # 2. route and encrypt into `out`; sends are grouped in runs
            self._encrypt_and_send(pkts, now, lookup, outmv, mtu)
            if core.has_outgoing:
                self._flush_outgoing()

    def _encrypt_and_send(self, pkts: list, now: float, lookup, outmv: memoryview, mtu: int) -> None:
        core = self._core
        reject_time = self._reject_time
        rekey_msgs = self._rekey_msgs
        bind_send = self._bind.send
        route_cache = self._route_cache
        o = 0  # write offset in outmv
        run_start = 0
        run_size = 0
        run_count = 0
        run_ep: object = None
        run_open = False
        cur_peer: Peer | None = None
        kp: Keypair | None = None
        tx = 0
        sent_data = False

        def flush_run() -> None:
            if run_count:
                try:
                    if run_count > 1:
                        bind_send([outmv[run_start:o]], run_ep, run_size)
                    else:
                        bind_send([outmv[run_start:o]], run_ep)
                except OSError as e:
                    self._count("send_errors")
                    self._log.debug("send to %s failed: %s", run_ep, e)

        def finish_peer() -> None:
            if cur_peer is not None and kp is not None and tx:
                core.note_sent(cur_peer, tx, sent_data, now)

        for pkt in pkts:
            length = len(pkt) - 16
            if length <= 0:
                continue
            b0 = pkt[0] >> 4
            dkey = pkt[16:20].tobytes() if b0 == 4 else pkt[24:40].tobytes()
            peer = route_cache.get(dkey)
            if peer is None:
                peer = lookup(pkt)
                if peer is None:
                    self._count("drop_no_route")
                    continue
                if len(route_cache) > 4096:
                    route_cache.clear()
                route_cache[dkey] = peer
            if peer is not cur_peer:
                finish_peer()
                cur_peer = peer
                tx = 0
                sent_data = False
                # The first packet to a peer in a batch goes through the core: it checks the
                # session (stages + handshakes if none) and starts a rekey when one is due.
                r = core.encrypt(peer, bytes(pkt[:length]), now)
                kp = peer.keypairs.current
                if kp is None or now - kp.created >= reject_time:
                    kp = None
                if r is not None:
                    ep = peer.endpoint
                    if ep is None:
                        self._count("drop_no_endpoint")
                        continue
                    size = len(r)
                    if not (
                        run_open
                        and ep == run_ep
                        and size <= run_size
                        and run_count < UDP_GSO_SEGMENTS
                        and o - run_start + size <= UDP_GSO_MAX
                    ):
                        flush_run()
                        run_start, run_size, run_count, run_ep = o, size, 0, ep
                    outmv[o : o + size] = r
                    o += size
                    run_count += 1
                    run_open = size == run_size
                    if o > len(outmv) - 65536:
                        flush_run()
                        o = run_start = run_count = 0
                        run_open = False
                continue
            if kp is None:
                core.encrypt(peer, bytes(pkt[:length]), now)  # staged for the handshake
                continue
            ctr = next(kp.send_counter)
            if ctr >= rekey_msgs:
                # rare: hand the packet to the core so it can rekey / refuse
                kp = None
                r = core.encrypt(peer, bytes(pkt[:length]), now)
                if r is not None:
                    self._send_one(r, peer.endpoint)
                continue
            pad = (-length) & 15
            if pad and length + pad > mtu:
                pad = mtu - length if mtu > length else 0
            plen = length + pad
            if pad:
                pkt[length:plen] = _ZEROS[:pad]
            size = plen + _MSG_OVERHEAD
            ep = peer.endpoint
            if ep is None:
                self._count("drop_no_endpoint")
                continue
            if not (
                run_open
                and ep == run_ep
                and size <= run_size
                and run_count < UDP_GSO_SEGMENTS
                and o - run_start + size <= UDP_GSO_MAX
            ):
                flush_run()
                run_start, run_size, run_count, run_ep = o, size, 0, ep
            _HDR_PACK_INTO(outmv, o, _TRANSPORT_WORD, kp.remote_index, ctr)
            kp.send_aead.encrypt_into(_NONCE(ctr), pkt[:plen], None, outmv[o + 16 : o + size])
            o += size
            run_count += 1
            run_open = size == run_size
            tx += size
            sent_data = True
            if o > len(outmv) - 65536:
                flush_run()
                o = run_start = run_count = 0
                run_open = False
        finish_peer()
        flush_run()

    # -- inbound: UDP -> TUN -------------------------------------------------------------------
    def _udp_loop(self) -> None:
        bind = self._bind
        core = self._core
        rbuf = bytearray(RECV_SLOT * RECV_BATCHES)
        rmv = memoryview(rbuf)
        pbuf = bytearray(RECV_SLOT * RECV_BATCHES)
        pmv = memoryview(pbuf)
        index = core.index_table
        inner_length = core.inner_packet_length
        note_received = core.note_received
        reject_time = self._reject_time
        reject_msgs = self._reject_msgs
        hs_queue = self._hs_queue
        recv = bind.recv_into
        counters = self._counters
        plain: list = []
        peer_rx: dict[Peer, list] = {}
        k = 0  # receive batches gathered since the last TUN write
        while self._running:
            base = k * RECV_SLOT
            try:
                # Block for the first batch; then take whatever else is already queued (up to
                # RECV_BATCHES) so that one flow's segments coalesce into bigger TUN writes.
                n, seg, src = recv(rmv[base : base + RECV_SLOT], k == 0)
            except OSError as e:
                self._count("recv_errors")
                self._log.debug("recv failed: %s", e)
                n, seg, src = -1, 0, None
            if n == 0 and src is not None:  # an empty datagram
                counters["drop_malformed"] = counters.get("drop_malformed", 0) + 1
                if k == 0:
                    continue
                n = -1
            if n < 0:
                k = RECV_BATCHES  # nothing more queued: write what we have
            elif n == 0:
                return  # closed
            else:
                k += 1
                now = time.monotonic()
                if seg <= 0:
                    seg = n
                end_all = base + n
                for off in range(base, end_all, seg):
                    end = off + seg
                    if end > end_all:
                        end = end_all
                    dl = end - off
                    d = rmv[off:end]
                    if dl < 32 or rbuf[off] != 4 or rbuf[off + 1] or rbuf[off + 2] or rbuf[off + 3]:
                        if dl >= 4 and rbuf[off] in (1, 2, 3):
                            try:
                                hs_queue.put_nowait((bytes(d), src))
                            except queue.Full:
                                counters["drop_handshake_queue_full"] = counters.get("drop_handshake_queue_full", 0) + 1
                                continue
                            if hs_queue.qsize() >= UNDER_LOAD_DEPTH:
                                core.set_under_load(now)
                        else:
                            counters["drop_malformed"] = counters.get("drop_malformed", 0) + 1
                        continue
                    kp = index.get(_from_bytes(rbuf[off + 4 : off + 8], "little"))
                    if kp.__class__ is not Keypair:
                        counters["drop_unknown_index"] = counters.get("drop_unknown_index", 0) + 1
                        continue
                    peer = kp.peer
                    if peer.keypairs.next is kp or now - kp.created >= reject_time:
                        self._slow_decrypt(bytes(d), src, now, plain)
                        continue
                    ctr = _from_bytes(rbuf[off + 8 : off + 16], "little")
                    if ctr >= reject_msgs:
                        counters["drop_counter_limit"] = counters.get("drop_counter_limit", 0) + 1
                        continue
                    plen = dl - 32
                    try:
                        kp.recv_aead.decrypt_into(_NONCE(ctr), d[16:], None, pmv[off : off + plen])
                    except InvalidTag:
                        counters["drop_decrypt_transport"] = counters.get("drop_decrypt_transport", 0) + 1
                        continue
                    with kp.recv_lock:
                        fresh = kp.replay.validate(ctr, reject_msgs)
                    if not fresh:
                        counters["drop_replay"] = counters.get("drop_replay", 0) + 1
                        continue
                    st = peer_rx.get(peer)
                    if st is None:
                        st = peer_rx[peer] = [0, False, src]
                    st[0] += dl
                    st[2] = src
                    if not plen:
                        continue  # keepalive
                    st[1] = True
                    ln = inner_length(pbuf, off, plen, peer)
                    if ln.__class__ is not int:
                        key = "drop_" + ln
                        counters[key] = counters.get(key, 0) + 1
                        continue
                    plain.append(pmv[off : off + ln])
            if k < RECV_BATCHES:
                continue
            k = 0
            # per-peer bookkeeping once per batch (DeviceCore.decrypt does it per packet)
            for peer, (nbytes, got_data, psrc) in peer_rx.items():
                note_received(peer, nbytes, psrc, got_data, now)
            peer_rx.clear()
            if plain:
                self._write_packets(plain)
                plain.clear()
            if core.has_outgoing:
                self._flush_outgoing()

    def _slow_decrypt(self, data: bytes, src: object, now: float, plain: list) -> None:
        try:
            r = self._core.decrypt(data, src, now)
        except Exception:
            self._log.exception("decrypt failed")
            self._count("drop_decrypt_error")
            return
        if r is None or r.__class__ is DropReason:
            return
        plain.append(memoryview(r[1]))

    def _write_packets(self, plain: list) -> None:
        tun = self._tun
        try:
            if tun.vnet_hdr:
                frames: list = []
                offload.coalesce(plain, frames)
                write = tun.write
                for f in frames:
                    write(f)
            else:
                for p in plain:
                    tun.write([p])
        except OSError as e:
            self._count("drop_tun_write")
            self._log.debug("tun write failed: %s", e)
