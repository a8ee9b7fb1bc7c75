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
    return (int.from_bytes(ip[12:14], "big") + int.from_bytes(ip[14:16], "big") + int.from_bytes(ip[16:18], "big")
            + int.from_bytes(ip[18:20], "big") + proto + length)


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
    m[t + 4:t + 8] = b"\0\0\0\0"  # sequence number
    m[t + 13] = 0xFF & ~(_TCP_PSH)  # flags except PSH
    m[t + 16:t + 18] = b"\0\0"  # checksum
    return int.from_bytes(m, "big")


_MASKS: dict[tuple[int, int], int] = {}


class Coalescer:
    """Turns a batch of decrypted IP packets into TUN frames (lists of buffers for writev).

    Only adjacent segments coalesce, which is what a bulk flow produces: the sender's TSO
    burst arrives as a contiguous run of same-sized segments.
    """

    __slots__ = ("frames", "_g_key", "_g_hdr", "_g_parts", "_g_next", "_g_mss", "_g_len", "_g_hl",
                 "_g_open", "_g_v6", "_g_psh", "_g_first")

    def __init__(self) -> None:
        self.frames: list[list] = []
        self._g_parts: list | None = None

    def add(self, pkt: memoryview) -> None:
        """Add one IP packet (trimmed to its IP length; the view must stay valid until flushed)."""
        b0 = pkt[0]
        ver = b0 >> 4
        if ver == 4:
            ihl = (b0 & 15) << 2
            if ihl != 20 or pkt[9] != 6 or (pkt[6] & 0x3F) or pkt[7]:
                self._single(pkt)
                return
        elif ver == 6:
            ihl = 40
            if pkt[6] != 6:
                self._single(pkt)
                return
        else:
            self._single(pkt)
            return
        n = len(pkt)
        if n < ihl + 20:
            self._single(pkt)
            return
        thl = (pkt[ihl + 12] >> 4) << 2
        flags = pkt[ihl + 13]
        hl = ihl + thl
        plen = n - hl
        if plen <= 0 or thl < 20 or (flags & ~(_TCP_ACK | _TCP_PSH)) or not (flags & _TCP_ACK):
            self._single(pkt)
            return
        hdr = pkt[:hl]
        mask = _MASKS.get((ihl, thl))
        if mask is None:
            mask = _MASKS[(ihl, thl)] = _mask(ihl, thl)
        key = int.from_bytes(hdr, "big") & mask
        seq = int.from_bytes(pkt[ihl + 4:ihl + 8], "big")
        if (self._g_parts is not None and self._g_open and key == self._g_key and seq == self._g_next
                and plen <= self._g_mss and self._g_len + plen + hl <= _MAX_IP_LEN):
            self._g_parts.append(pkt[hl:])
            self._g_len += plen
            self._g_next = (seq + plen) & 0xFFFFFFFF
            if plen < self._g_mss or flags & _TCP_PSH:
                self._g_open = False
                self._g_psh = bool(flags & _TCP_PSH)
            return
        self._flush_group()
        self._g_key = key
        self._g_hdr = hdr
        self._g_first = pkt
        self._g_parts = [pkt[hl:]]
        self._g_next = (seq + plen) & 0xFFFFFFFF
        self._g_mss = plen
        self._g_len = plen
        self._g_hl = hl
        self._g_v6 = ver == 6
        self._g_psh = False
        self._g_open = not (flags & _TCP_PSH)

    def _single(self, pkt: memoryview) -> None:
        self._flush_group()
        self.frames.append([ZERO_VNET_HDR, pkt])

    def _flush_group(self) -> None:
        parts = self._g_parts
        if parts is None:
            return
        self._g_parts = None
        if len(parts) == 1:
            self.frames.append([ZERO_VNET_HDR, self._g_first])
            return
        hl = self._g_hl
        hdr = bytearray(self._g_hdr)
        total = hl + self._g_len
        if self._g_v6:
            ihl = 40
            struct.pack_into("!H", hdr, 4, total - 40)
            pseudo = _pseudo6(hdr, 6, total - 40)
            gso = GSO_TCPV6
        else:
            ihl = 20
            struct.pack_into("!H", hdr, 2, total)
            ipv4_header_checksum(memoryview(hdr)[:20])
            pseudo = _pseudo4(hdr, 6, total - 20)
            gso = GSO_TCPV4
        if self._g_psh:
            hdr[ihl + 13] |= _TCP_PSH
        struct.pack_into("!H", hdr, ihl + 16, checksum_fold(pseudo))
        vh = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, hl, self._g_mss, ihl, 16)
        parts.insert(0, hdr)
        parts.insert(0, vh)
        self.frames.append(parts)

    def flush(self) -> list[list]:
        """Finish the batch; returns the frames and resets."""
        self._flush_group()
        frames = self.frames
        self.frames = []
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
    seq0 = int.from_bytes(hdr[ihl + 4:ihl + 8], "big")
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
        chunk = payload[off:off + gso_size]
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
