"""Two rtnetlink look-ups for MagicDNS's interface check: which interfaces hold an address, which a reply leaves by."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import Iterable

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF = 1, 4
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + _RTATTR.size <= end:
        ln, typ = _RTATTR.unpack_from(buf, off)
        if ln < _RTATTR.size or off + ln > end:
            break
        out.setdefault(typ, buf[off + _RTATTR.size : off + ln])
        off += _align(ln)
    return out


def _messages(data: bytes):
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        ln, typ, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if ln < _NLMSGHDR.size or off + ln > len(data):
            return
        yield typ, data[off : off + ln]
        off += _align(ln)


def _request(typ: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """Send one request on a fresh NETLINK_ROUTE socket; the replies up to DONE / ERROR / the single answer."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.settimeout(1.0)
        seq = int.from_bytes(os.urandom(4), "little")
        s.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), typ, NLM_F_REQUEST | flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            for mtyp, msg in _messages(s.recv(65536)):
                if mtyp == NLMSG_DONE:
                    return out
                if mtyp == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", msg, _NLMSGHDR.size)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return out
                out.append((mtyp, msg))
            if not flags & NLM_F_DUMP and out:
                return out


def ifindexes_holding(addrs: Iterable[str]) -> set[int]:
    """Indexes of the interfaces that have one of `addrs` configured (RTM_GETADDR dump)."""
    want = {ipaddress.ip_address(a.split("%")[0]) for a in addrs}
    out: set[int] = set()
    for fam in {socket.AF_INET if w.version == 4 else socket.AF_INET6 for w in want}:
        for typ, msg in _request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(fam, 0, 0, 0, 0)):
            if typ != RTM_NEWADDR:
                continue
            _f, _plen, _fl, _scope, index = _IFADDRMSG.unpack_from(msg, _NLMSGHDR.size)
            attrs = _attrs(msg, _NLMSGHDR.size + _IFADDRMSG.size, len(msg))
            for key in (IFA_LOCAL, IFA_ADDRESS):
                raw = attrs.get(key)
                if raw and len(raw) in (4, 16) and ipaddress.ip_address(raw) in want:
                    out.add(index)
    return out


def route_oif(addr: str) -> int | None:
    """The interface a packet to `addr` leaves by (RTM_GETROUTE, as `ip route get`); lo for local addresses.

    None when there is no route (ENETUNREACH, an unreachable/prohibit rule).
    """
    ip = ipaddress.ip_address(addr.split("%")[0])
    fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(fam, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += _RTATTR.pack(_RTATTR.size + len(ip.packed), RTA_DST) + ip.packed
    try:
        replies = _request(RTM_GETROUTE, 0, body)
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL, errno.ESRCH):
            return None
        raise
    for typ, msg in replies:
        if typ == RTM_NEWROUTE:
            oif = _attrs(msg, _NLMSGHDR.size + _RTMSG.size, len(msg)).get(RTA_OIF)
            if oif is not None and len(oif) == 4:
                return struct.unpack("=I", oif)[0]
    return None
