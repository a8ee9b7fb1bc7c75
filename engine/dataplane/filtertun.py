"""A Tun wrapper applying the packet filter: check_out on frames read from the TUN, check_in on frames written.

    OS ─TUN read─► FilterTun.read_into ─check_out─► Device (encrypt, send)    dropped: read the next
    OS ◄TUN write─ FilterTun.write ◄─check_in── Device (decrypt, coalesce)    dropped: not written

The Device (engine.dataplane.device) is unchanged: it gets a FilterTun as its ``tun=`` and
uses the same ``Tun`` interface (``read_into``, ``write``, ``close``, ``name``, ``mtu``,
``vnet_hdr``, ``tso``). The filter is swapped atomically with ``set_filter`` (one attribute
store; the data-plane threads read it once per frame).

Offload frames (IFF_VNET_HDR): every frame starts with a 10-byte virtio_net_hdr.

- read side: the IP packet follows the header; with TSO it may be a TCP super-packet whose
  IP length field covers the whole frame, so the filter sees one ordinary (large) packet of
  one flow. Outbound is always accepted except the pre-checks (multicast, link-local, junk).
- write side: ``offload.coalesce`` hands ``[hdr, packet]`` for single packets and
  ``[gso_hdr, ip+tcp header, payload, payload, ...]`` for a coalesced run of one TCP flow's
  ACK/PSH segments. For the latter the filter checks one header-only copy of the first
  segment (IP length patched to the header length): all segments share its addresses, ports
  and non-SYN flags, so its verdict is every segment's verdict.

Drops are counted on the Filter (``filter.drops``) and in ``FilterTun.dropped_in/out``;
nothing here raises on peer input.
"""

from __future__ import annotations

from typing import Any

from engine.filter import DROP, Filter

VNET_HDR_LEN = 10  # engine.dataplane.offload.VNET_HDR_LEN


class FilterTun:
    """Wraps a Tun (LinuxTun, ChannelTun) with a swappable Filter."""

    def __init__(self, inner: Any, filt: Filter | None = None) -> None:
        self.inner = inner
        self.filter = filt if filt is not None else Filter.allow_none()
        self.dropped_out = 0
        self.dropped_in = 0

    # -- Tun attributes the Device reads -------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        self.inner.mtu = value

    @property
    def vnet_hdr(self) -> bool:
        return bool(getattr(self.inner, "vnet_hdr", False))

    @property
    def tso(self) -> bool:
        return bool(getattr(self.inner, "tso", False))

    def set_filter(self, filt: Filter) -> None:
        """Install a new filter (atomic for the data-plane threads)."""
        self.filter = filt

    def __getattr__(self, name: str) -> Any:  # set_mtu, fd, read_batch, ... of the inner Tun
        return getattr(self.inner, name)

    # -- data path -------------------------------------------------------------------------
    def read_into(self, buf, block: bool = True) -> int:
        """Read the next frame the filter lets out (same contract as Tun.read_into)."""
        read = self.inner.read_into
        off = VNET_HDR_LEN if self.inner.vnet_hdr else 0
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        while True:
            n = read(buf, block)
            if n <= off:
                return n  # 0 closed, -1 nothing waiting (or a runt the Device counts)
            # Fast path (bulk traffic): IPv4 TCP, no options, unicast non-link-local destination.
            # check_out would accept it and record nothing (only UDP/SCTP flows are remembered).
            if n - off >= 40 and mv[off] == 0x45 and mv[off + 9] == 6:
                d0 = mv[off + 16]
                if d0 < 224 and (d0 != 169 or mv[off + 17] != 254):
                    return n
            if self.filter.check_out(mv[off:n]) is DROP:
                self.dropped_out += 1
                continue
            return n

    def write(self, parts: list) -> None:
        """Write one frame (list of buffers) if the filter lets it in."""
        filt = self.filter
        if self.inner.vnet_hdr:
            hdr = parts[0]
            if len(parts) == 2:
                pkt = parts[1]
            elif hdr[1]:  # gso_type != NONE: a coalesced TCP run, parts[1] is the IP+TCP header
                pkt = _header_only(parts[1])
            else:
                pkt = b"".join(bytes(p) for p in parts[1:])
        else:
            pkt = parts[0] if len(parts) == 1 else b"".join(bytes(p) for p in parts)
        if filt.check_in(pkt) is DROP:
            self.dropped_in += 1
            return
        self.inner.write(parts)

    def close(self) -> None:
        self.inner.close()


def _header_only(hdr) -> bytearray:
    """A copy of a coalesced frame's IP+TCP header whose IP length says "no payload"."""
    h = bytearray(hdr)
    n = len(h)
    if h and h[0] >> 4 == 6:
        plen = n - 40
        h[4], h[5] = plen >> 8, plen & 0xFF
    else:
        h[2], h[3] = n >> 8, n & 0xFF
    return h


__all__ = ["FilterTun"]
