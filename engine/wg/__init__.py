"""Pure (sans-IO) WireGuard protocol core: handshake, cookies, transport, replay, timers, allowed-ips.

Nothing here does I/O, reads a clock or starts a thread: the caller passes ``now``
(a monotonic float, seconds) into every call and sends whatever comes back.

Data-plane API (``engine.wg.core``)
===================================

::

    from engine.wg.core import DeviceCore, Outgoing, DropReason
    from engine.wg.constants import Timings

    core = DeviceCore(private_key=b32 | None,            # 32 raw bytes; None = no key (all input dropped)
                      wall_clock=time.time,             # only for TAI64N timestamps / last_handshake
                      timings=Timings(),                # tests may lower rekey_after_time etc.
                      mtu=1420,                         # padding never grows a packet beyond this
                      random_bytes=secrets.token_bytes, # indexes, ephemerals, cookie secrets
                      rng=random.Random(),              # timer jitter only
                      on_outgoing=None)                 # called (any thread) when the outbox fills
    core.set_private_key(b32 | None, now)               # changes identity, drops all sessions
    peer = core.add_peer(public_key, preshared_key=None, persistent_keepalive=0,
                         endpoint=None, allowed_ips=(), now=now)  # or core.update_peer(...)
    core.remove_peer(public_key)
    core.set_allowed_ips(peer, ["10.0.0.2/32", ...]); core.add_allowed_ip(peer, net)
    core.allowed_ips.lookup(dst_ip_bytes) -> Peer | None          # cryptokey routing (TUN -> peer)

    # TUN reader thread (hot path; 1420 B: encrypt ≈ 1.6 µs, decrypt ≈ 2.8 µs incl. AEAD, one core):
    peer = core.route(ip_packet)                    # allowed-ips lookup on the destination; None = drop
    datagram = core.encrypt(peer, ip_packet, now)   # bytes to send to peer.endpoint, or None:
                                                    # the packet was staged and a handshake started
    # UDP reader thread (hot path):
    r = core.decrypt(datagram, src, now)          # datagram: bytes or bytearray (not memoryview)
        # tuple (peer, ip_packet) -> write ip_packet to TUN (already trimmed, source-checked)
        # None                    -> consumed (handshake, keepalive, cookie reply): nothing to write
        # DropReason (a str)      -> dropped; also counted in core.counters()
    # timer thread (or after every batch): replies, initiations, keepalives, flushed staged packets
    for out in core.handle_timers(now):   # == fire due timers, then core.datagrams_to_send()
        send(out.addr, out.data)          # out.peer is None only for cookie replies (addr = src)
    core.next_deadline() -> float | None  # earliest timer; call handle_timers by then, and at
                                          # least every ~0.1 s because hot-path hooks move timers.
    core.has_outgoing                      # cheap bool: datagrams_to_send() would return something
    core.set_under_load(now)              # the adapter saw a handshake backlog: demand cookies 1 s

``src`` is the datagram's source (any hashable; an ``(ip, port)`` tuple lets cookies bind to
the address). ``peer.endpoint`` is updated from ``src`` of every authenticated packet;
the adapter may set it with ``core.set_endpoint(peer, addr)``. ``Outgoing.addr`` is the
endpoint to use (``peer.endpoint`` at the time of queueing, or ``src`` for cookie replies).
``core.counters()`` -> {"drop_<reason>": n, "handshakes_completed": n, ...}.
Per-peer status: ``peer.public_key``, ``peer.rx_bytes``, ``peer.tx_bytes``,
``peer.last_handshake`` (wall time or None), ``peer.persistent_keepalive``, ``peer.endpoint``.

Thread safety
-------------
``encrypt`` may run in one thread while ``decrypt`` runs in another and ``handle_timers`` in
a third. The hot paths take no device lock: the current keypair is read with one attribute
load, the send counter is an ``itertools.count`` (``next()`` is atomic in CPython), the
replay window is updated under a per-keypair lock, and timer hooks are single-attribute
stores (a race can only add or skip one keepalive, never reuse a nonce). Handshakes, keypair
rotation, staging and timer expiry take the per-peer lock; peer/config changes take the
device lock. Counters are plain ints updated under the GIL (approximate under races).

Fast-path contract (for a batching data plane that inlines ``encrypt``/``decrypt``)
----------------------------------------------------------------------------------
A fast path inlines only the per-packet crypto; the rules stay in the core::

    core.index_table                      # live read-only Mapping: our index -> Keypair | Peer
    core.keypair_for_index(i)             # -> Keypair | None (a session, not a handshake)
    core.inner_packet_length(buf, off, n, peer)  # -> IP length, or DropReason (not counted)
    core.note_sent(peer, nbytes, data, now)      # once per peer per sent batch
    core.note_received(peer, nbytes, src, data, now)  # once per peer per received batch

``note_sent``/``note_received`` are exactly the bookkeeping ``encrypt``/``decrypt`` do per
packet (they call them): timers (persistent keepalive, passive keepalive, new-handshake,
data sent/received), tx/rx bytes, roaming to ``src`` (the source of the batch's latest
packet) and, on receive, the last-minute rekey; they may queue an initiation (check
``has_outgoing``). ``data`` says whether any packet of the batch was not a keepalive.
Stable attributes: ``Keypair.{send_aead, recv_aead, send_counter, replay, recv_lock,
created, is_initiator, remote_index, peer}`` and ``Peer.{keypairs.current/next, endpoint}``.
A fast path must hand to ``core.encrypt``/``core.decrypt`` every case it does not cover:
no or expired keypair, the first packet of a batch (it starts a due rekey), counter ≥
rekey_after_messages, a packet under ``keypairs.next`` (key confirmation), a keypair past
REJECT_AFTER_TIME and every non-transport message.

Modules: ``constants`` (spec constants, Timings), ``messages`` (wire formats), ``crypto``
(BLAKE2s, KDF, AEADs, X25519, TAI64N), ``handshake`` (Noise_IKpsk2), ``cookie`` (mac1/mac2,
cookie replies, rate limiter), ``replay`` (sliding window), ``keypair``/``session``
(keypairs and current/previous/next rotation), ``timers`` (per-peer timer state machine),
``allowedips`` (longest-prefix match), ``core`` (DeviceCore/Peer tying it together).
"""
