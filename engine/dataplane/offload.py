"""TUN offload helpers: virtio_net_hdr codec, TCP coalescing for TUN writes, TSO segmentation for reads.

With IFF_VNET_HDR every TUN frame starts with a 10-byte ``virtio_net_hdr`` (little endian on
the platforms we run on)::

    u8 flags | u8 gso_type | u16 hdr_len | u16 gso_size | u16 csum_start | u16 csum_offset

Receive side (UDP -> TUN): consecutive TCP segments of one flow (same addresses, ports, ack,
window, options; contiguous sequence numbers; only ACK/PSH flags) are written as one
super-packet with ``gso_type`` TCPV4/TCPV6 and ``NEEDS_CSUM``, so the kernel's TCP stack sees
one skb per up to 64 KiB and computes no per-segment checksums.  Anything else is written as
is with a zero header.

Send side (TUN -> UDP): if the TUN was opened with TSO offload, a read may return a TCP
super-packet that ``segment()`` cuts into MTU-sized packets with correct checksums (each
WireGuard transport message carries one ordinary IP packet, so wireguard-go peers interoperate).
"""

from __future__ import annotations

import struct

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

ZERO_VNET_HDR = bytes(VNET_HDR_LEN)
_VNET = struct.Struct("<BBHHHH")
_TCP_ACK = 0x10
_TCP_PSH = 0x08
_TCP_FIN = 0x01
_MAX_IP_LEN = 65535


def parse_vnet_hdr(b: bytes | memoryview) -> tuple[int, int, int, int, int, int]:
    """(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)."""
    return _VNET.unpack_from(b, 0)


def checksum_fold(s: int) -> int:
    """Fold a (possibly big) ones-complement partial sum to 16 bits (not inverted)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum_partial(data: bytes | memoryview) -> int:
    """Ones-complement sum of ``data`` as 16-bit big-endian words (odd length zero-padded), folded.

    Uses ``int.from_bytes(...) % 0xFFFF`` (2**16 == 1 mod 0xFFFF): the word sum modulo 0xFFFF,
    computed in C; with two halving folds first so the bigint division has fewer digits.
    """
    n = len(data)
    v = int.from_bytes(data, "big")
    if n & 1:
        v <<= 8
        n += 1
    bits = n * 8
    while bits > 2048:
        half = ((bits >> 1) + 15) & ~15
        v = (v >> half) + (v & ((1 << half) - 1))
        bits = half + 16
    r = v % 0xFFFF
    if r == 0 and v:
        return 0xFFFF
    return r


def _pseudo4(ip: bytes | memoryview, proto: int, length: int) -> int:
    return (
        int.from_bytes(ip[12:14], "big")
        + int.from_bytes(ip[14:16], "big")
        + int.from_bytes(ip[16:18], "big")
        + int.from_bytes(ip[18:20], "big")
        + proto
        + length
    )


def _pseudo6(ip: bytes | memoryview, proto: int, length: int) -> int:
    return checksum_partial(ip[8:40]) + proto + (length >> 16) + (length & 0xFFFF)


def ipv4_header_checksum(hdr: bytearray) -> None:
    """Recompute the IPv4 header checksum in place."""
    hdr[10] = hdr[11] = 0
    c = 0xFFFF - checksum_fold(checksum_partial(hdr))
    hdr[10] = c >> 8
    hdr[11] = c & 0xFF


# ----------------------------------------------------------------------------------------------
# Receive side: coalescing
# ----------------------------------------------------------------------------------------------


def _mask(ihl: int, thl: int) -> int:
    """Bit mask over the IP+TCP header selecting the fields that must match to coalesce."""
    m = bytearray(b"\xff" * (ihl + thl))
    if ihl == 20:
        m[2:6] = b"\0\0\0\0"  # total length, IP id
        m[10:12] = b"\0\0"  # header checksum
    else:
        m[4:6] = b"\0\0"  # IPv6 payload length
    t = ihl
    m[t + 4 : t + 8] = b"\0\0\0\0"  # sequence number
    m[t + 13] = 0xFF & ~(_TCP_PSH)  # flags except PSH
    m[t + 16 : t + 18] = b"\0\0"  # checksum
    return int.from_bytes(m, "big")


_MASKS: dict[int, int] = {}  # by ihl + header length: 40 + thl (IPv4), 80 + thl (IPv6)


def _group_frame(
    parts: list, first: memoryview, hdr: memoryview, hl: int, plen_total: int, mss: int, v6: bool, psh: bool
) -> list:
    """The TUN frame of a run: ``first`` as it is if the run is that one segment, else the run's
    payloads prefixed with a GSO virtio header and the fixed-up IP/TCP header."""
    if len(parts) == 3:  # [vnet, hdr, the first segment's payload]
        return [ZERO_VNET_HDR, first]
    h = bytearray(hdr)
    total = hl + plen_total
    if v6:
        ihl = 40
        h[4] = (total - 40) >> 8
        h[5] = (total - 40) & 0xFF
        pseudo = _pseudo6(h, 6, total - 40)
        gso = GSO_TCPV6
    else:
        ihl = 20
        h[2] = total >> 8
        h[3] = total & 0xFF
        ipv4_header_checksum(memoryview(h)[:20])
        pseudo = _pseudo4(h, 6, total - 20)
        gso = GSO_TCPV4
    if psh:
        h[ihl + 13] |= _TCP_PSH
    c = checksum_fold(pseudo)
    h[ihl + 16] = c >> 8
    h[ihl + 17] = c & 0xFF
    parts[0] = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, hl, mss, ihl, 16)
    parts[1] = h
    return parts


def coalesce(pkts: list, frames: list) -> None:
    """Append TUN frames (lists of buffers for writev) for a batch of decrypted IP packets.

    Runs of adjacent TCP segments of one flow (same addresses, ports, ack, window, options,
    TTL/TOS; contiguous sequence numbers; only ACK/PSH; all but the last of equal size; at most
    64 KiB) become one GSO super-packet; everything else is passed through with a zero header.
    Only adjacent segments coalesce, which is what a bulk flow produces (the sender's TSO burst
    arrives as a contiguous run). The views in ``pkts`` must stay valid until the frames are written.
    """
    masks = _MASKS
    from_bytes = int.from_bytes
    append = frames.append
    g_parts = None  # current group: [vnet, hdr, payload, payload, ...]
    g_key = g_next = g_mss = g_len = g_hl = 0
    g_open = g_v6 = g_psh = False
    g_first = g_hdr = None
    for pkt in pkts:
        b0 = pkt[0]
        if b0 == 0x45:
            ihl = 20
            if pkt[9] != 6 or (pkt[6] & 0x3F) or pkt[7]:
                ihl = 0
        elif b0 >> 4 == 6:
            ihl = 40 if pkt[6] == 6 else 0
        else:
            ihl = 0
        n = len(pkt)
        if ihl and n >= ihl + 20:
            thl = (pkt[ihl + 12] >> 4) << 2
            flags = pkt[ihl + 13]
            hl = ihl + thl
            plen = n - hl
            if plen > 0 and thl >= 20 and (flags & 0xF7) == _TCP_ACK:
                hdr = pkt[:hl]
                mask = masks.get(hl + ihl)
                if mask is None:
                    mask = masks[hl + ihl] = _mask(ihl, thl)
                key = from_bytes(hdr, "big") & mask
                seq = from_bytes(pkt[ihl + 4 : ihl + 8], "big")
                if g_open and key == g_key and seq == g_next and plen <= g_mss and g_len + plen + hl <= _MAX_IP_LEN:
                    g_parts.append(pkt[hl:])
                    g_len += plen
                    g_next = (seq + plen) & 0xFFFFFFFF
                    if plen < g_mss or flags & _TCP_PSH:
                        g_open = False
                        g_psh = bool(flags & _TCP_PSH)
                    continue
                if g_parts is not None:
                    append(_group_frame(g_parts, g_first, g_hdr, g_hl, g_len, g_mss, g_v6, g_psh))
                g_parts = [None, None, pkt[hl:]]
                g_first = pkt
                g_hdr = hdr
                g_key = key
                g_next = (seq + plen) & 0xFFFFFFFF
                g_mss = g_len = plen
                g_hl = hl
                g_v6 = ihl == 40
                g_psh = False
                g_open = not (flags & _TCP_PSH)
                continue
        if g_parts is not None:
            append(_group_frame(g_parts, g_first, g_hdr, g_hl, g_len, g_mss, g_v6, g_psh))
            g_parts = None
            g_open = False
        append([ZERO_VNET_HDR, pkt])
    if g_parts is not None:
        append(_group_frame(g_parts, g_first, g_hdr, g_hl, g_len, g_mss, g_v6, g_psh))


class Coalescer:
    """Incremental wrapper around ``coalesce`` (add packets, then ``flush()`` for the frames)."""

    def __init__(self) -> None:
        self._pkts: list = []

    def add(self, pkt: memoryview) -> None:
        self._pkts.append(pkt)

    def flush(self) -> list[list]:
        frames: list[list] = []
        coalesce(self._pkts, frames)
        self._pkts = []
        return frames


# ----------------------------------------------------------------------------------------------
# Send side: segmentation of TSO super-packets and completion of partial checksums
# ----------------------------------------------------------------------------------------------


def complete_checksum(pkt: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a NEEDS_CSUM packet: the field holds the pseudo-header sum; sum from csum_start."""
    pos = csum_start + csum_offset
    c = 0xFFFF - checksum_fold(checksum_partial(pkt[csum_start:]))
    if c == 0 and pkt[9 if (pkt[0] >> 4) == 4 else 6] == 17:
        c = 0xFFFF  # UDP: 0 means "no checksum"
    pkt[pos] = c >> 8
    pkt[pos + 1] = c & 0xFF


def segment(frame: memoryview) -> list[bytes]:
    """Split one TUN read (virtio_net_hdr + packet) into ordinary IP packets with valid checksums.

    Raises ValueError on a frame we cannot handle (the caller drops and counts it).
    """
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(frame, 0)
    pkt = frame[VNET_HDR_LEN:]
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            b = bytearray(pkt)
            complete_checksum(b, csum_start, csum_offset)
            return [bytes(b)]
        return [bytes(pkt)]
    if gso not in (GSO_TCPV4, GSO_TCPV6):
        raise ValueError(f"unsupported gso_type {gso_type}")
    v6 = gso == GSO_TCPV6
    ihl = 40 if v6 else (pkt[0] & 15) << 2
    thl = (pkt[ihl + 12] >> 4) << 2
    hl = ihl + thl
    if gso_size <= 0 or len(pkt) <= hl:
        raise ValueError("bad TSO frame")
    hdr = bytes(pkt[:hl])
    payload = pkt[hl:]
    seq0 = int.from_bytes(hdr[ihl + 4 : ihl + 8], "big")
    flags0 = hdr[ihl + 13]
    ipid0 = int.from_bytes(hdr[4:6], "big") if not v6 else 0
    src_dst = 0
    if v6:
        src_dst = checksum_partial(hdr[8:40])
    else:
        src_dst = _pseudo4(hdr, 0, 0)
    out = []
    total = len(payload)
    nseg = (total + gso_size - 1) // gso_size
    for i in range(nseg):
        off = i * gso_size
        chunk = payload[off : off + gso_size]
        clen = len(chunk)
        h = bytearray(hdr)
        last = i == nseg - 1
        fl = flags0
        if not last:
            fl &= ~(_TCP_PSH | _TCP_FIN)
        if i:
            fl &= ~0x80  # CWR only on the first segment
        h[ihl + 13] = fl
        struct.pack_into("!I", h, ihl + 4, (seq0 + off) & 0xFFFFFFFF)
        tcp_len = thl + clen
        if v6:
            struct.pack_into("!H", h, 4, tcp_len)
        else:
            struct.pack_into("!HH", h, 2, hl + clen, (ipid0 + i) & 0xFFFF)
            ipv4_header_checksum(memoryview(h)[:ihl])
        h[ihl + 16] = h[ihl + 17] = 0
        s = src_dst + 6 + tcp_len + checksum_partial(h[ihl:]) + checksum_partial(chunk)
        c = 0xFFFF - checksum_fold(s)
        h[ihl + 16] = c >> 8
        h[ihl + 17] = c & 0xFF
        out.append(bytes(h) + bytes(chunk))
    return out
