"""MagicDNS resolver core (sans-IO): a DNS query in, a reply, a forward request, or a counted drop out.

handle(query) ->  Reply(wire)                      tailnet names, PTR, NXDOMAIN, FORMERR, SERVFAIL
                  Forward(query, upstreams)        split-DNS route or default upstreams
                  Drop(reason)                     junk we must not answer (counted)
finish_forward(query, upstream_reply | None) -> Reply | Drop
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from engine.dns.config import CGNAT_V4, TAILNET_V6, AnyUpstream, ResolverConfig, fqdn

MAX_QUERY_BYTES = 4096  # a query larger than this is junk (tailscale caps TCP requests the same)
MIN_UDP_PAYLOAD = 512
MAX_UDP_PAYLOAD = 4096
SIZE_DNS_HEADER = 12
REPLY_CACHE_SIZE = 4096  # our own answers kept (query minus id -> reply minus id); emptied when full or on a new config
# 2b id | 2b flags | 2b qd | 2b an | 2b ns | 2b ar   (RFC 1035 §4.1.1)
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000


@dataclass(frozen=True, slots=True)
class Reply:
    """Send these bytes back to the client."""

    wire: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `query` to the upstreams (in order); pass what comes back to finish_forward."""

    query: bytes
    upstreams: tuple[AnyUpstream, ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """Answer nothing."""

    reason: str


Action = Reply | Forward | Drop


@dataclass
class Counters:
    """Everything the resolver did, by kind (for metrics and tests)."""

    local: int = 0
    nxdomain: int = 0
    forwarded: int = 0
    servfail: int = 0
    formerr: int = 0
    notimp: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> Drop:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return Drop(reason)


def _header_reply(query: bytes, rcode: int) -> bytes:
    """A header-only reply for a query we could not parse (same id and opcode, QR set)."""
    qid, flags, *_ = _HEADER.unpack_from(query, 0)
    out_flags = _QR | (flags & 0x7800) | (flags & 0x0100) | 0x0080 | (rcode & 0xF)
    return _HEADER.pack(qid, out_flags, 0, 0, 0, 0)


class Resolver:
    """Answers MagicDNS names from a ResolverConfig; reconfigure with set_config()."""

    def __init__(self, config: ResolverConfig | None = None) -> None:
        self.counters = Counters()
        self.set_config(config or ResolverConfig())

    def set_config(self, config: ResolverConfig) -> None:
        self.config = config
        rev: dict[str, str] = {}
        for name, addrs in config.hosts.items():
            for a in addrs:
                rev.setdefault(str(ipaddress.ip_address(a)), name)
        self._reverse = rev
        self._routes = sorted(config.routes.items(), key=lambda kv: -len(kv[0]))
        self._local = tuple(sorted(config.local_domains, key=len, reverse=True))
        # Answers we give ourselves depend only on the query (minus its id) and the config: a reply
        # cache makes the hot path (the same names asked again and again) skip dnspython entirely.
        self._replies: dict[tuple[bool, bytes], bytes] = {}

    # -- entry points ---------------------------------------------------------------------
    def handle(self, data: bytes, *, tcp: bool = False) -> Action:
        """One query from a client (UDP datagram or one TCP message without the length prefix)."""
        if len(data) > MAX_QUERY_BYTES:
            return self.counters.drop("oversize")
        if len(data) < SIZE_DNS_HEADER:
            return self.counters.drop("short")
        flags = _HEADER.unpack_from(data, 0)[1]
        if flags & _QR:
            return self.counters.drop("not-a-query")
        if (flags >> 11) & 0xF != dns.opcode.QUERY:
            self.counters.notimp += 1
            return Reply(_header_reply(data, dns.rcode.NOTIMP))
        hit = self._cached(data, tcp)
        if hit is not None:
            return hit
        try:
            q = dns.message.from_wire(data)
        except Exception:  # dnspython raises many types on junk; all mean FORMERR
            self.counters.formerr += 1
            return Reply(_header_reply(data, dns.rcode.FORMERR))
        if q.opcode() != dns.opcode.QUERY:
            self.counters.notimp += 1
            return Reply(_header_reply(data, dns.rcode.NOTIMP))
        if len(q.question) != 1:
            self.counters.formerr += 1
            return Reply(_header_reply(data, dns.rcode.FORMERR))
        try:
            action = self._resolve(q, data, tcp)
        except Exception:  # never let one odd query escape the receive loop
            self.counters.servfail += 1
            return Reply(_header_reply(data, dns.rcode.SERVFAIL))
        if isinstance(action, Reply):  # our own answer (local, NXDOMAIN in our domain, no upstream)
            if len(self._replies) >= REPLY_CACHE_SIZE:
                self._replies.clear()
            self._replies[(tcp, bytes(data[2:]))] = action.wire[2:]
        return action

    def _cached(self, data: bytes, tcp: bool) -> Reply | None:
        body = self._replies.get((tcp, bytes(data[2:])))
        if body is None:
            return None
        rcode = body[1] & 0xF  # body starts at the flags word
        if rcode == dns.rcode.NXDOMAIN:
            self.counters.nxdomain += 1
        elif rcode == dns.rcode.NOERROR:
            self.counters.local += 1
        else:
            self.counters.servfail += 1
        return Reply(bytes(data[:2]) + body)

    def finish_forward(self, query: bytes, reply: bytes | None) -> Action:
        """Relay an upstream reply (checked against the query's id) or SERVFAIL when none came."""
        if reply is None or len(reply) < SIZE_DNS_HEADER or reply[:2] != query[:2] or not reply[2] & 0x80:
            self.counters.servfail += 1
            return Reply(_header_reply(query, dns.rcode.SERVFAIL))
        return Reply(reply)

    # -- resolution -----------------------------------------------------------------------
    def _resolve(self, q: dns.message.Message, data: bytes, tcp: bool) -> Action:
        rrq = q.question[0]
        name = rrq.name.to_text().lower()
        if not name.endswith("."):
            name += "."
        qtype, qclass = rrq.rdtype, rrq.rdclass
        if qclass == dns.rdataclass.IN:
            local = self._answer_local(q, name, rrq.name, qtype, tcp)
            if local is not None:
                return local
        for suffix, ups in self._routes:
            if name == suffix or name.endswith("." + suffix):
                self.counters.forwarded += 1
                return Forward(data, ups)
        if self._in_local(name):
            return self._reply(q, tcp, rcode=dns.rcode.NXDOMAIN)
        if self.config.upstreams:
            self.counters.forwarded += 1
            return Forward(data, self.config.upstreams)
        self.counters.servfail += 1
        return self._reply(q, tcp, rcode=dns.rcode.SERVFAIL, aa=False)

    def _in_local(self, name: str) -> bool:
        for s in self._local:
            if name == s or name.endswith("." + s):
                # A more specific split route still wins over a local domain.
                return not any(len(r) > len(s) and (name == r or name.endswith("." + r)) for r, _ in self._routes)
        return False

    def _answer_local(self, q, name: str, qname: dns.name.Name, qtype: int, tcp: bool) -> Action | None:
        hosts = self.config.hosts
        addrs = hosts.get(name)
        if addrs is None and name.count(".") == 1:  # single label: expand with search domains
            for dom in self.config.search:
                addrs = hosts.get(name + dom)
                if addrs is not None:
                    break
        if addrs is not None:
            if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
                want = {dns.rdatatype.A: (4,), dns.rdatatype.AAAA: (6,)}.get(qtype, (4, 6))
                recs: dict[int, list[str]] = {4: [], 6: []}
                for a in addrs:
                    v = 6 if ":" in a else 4
                    if v in want:
                        recs[v].append(a)
                answers = []
                for v, rtype in ((4, "A"), (6, "AAAA")):
                    if recs[v]:
                        answers.append(dns.rrset.from_text(qname, self.config.ttl, "IN", rtype, *recs[v]))
                return self._reply(q, tcp, answers=answers)
            return self._reply(q, tcp)  # name exists, no data of that type
        if name.endswith(".in-addr.arpa.") or name.endswith(".ip6.arpa."):
            try:
                ip = ipaddress.ip_address(dns.reversename.to_address(qname))
            except Exception:
                ip = None
            if ip is not None:
                host = self._reverse.get(str(ip))
                if host is not None:
                    if qtype == dns.rdatatype.PTR:
                        return self._reply(
                            q, tcp, answers=[dns.rrset.from_text(qname, self.config.ttl, "IN", "PTR", host)]
                        )
                    return self._reply(q, tcp)
                if ip in CGNAT_V4 or ip in TAILNET_V6:
                    if self._in_local(name):
                        return self._reply(q, tcp, rcode=dns.rcode.NXDOMAIN)
        return None

    def _reply(self, q, tcp: bool, *, answers=(), rcode: int = dns.rcode.NOERROR, aa: bool = True) -> Reply:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        if aa:
            r.flags |= dns.flags.AA
        r.set_rcode(rcode)
        r.answer.extend(answers)
        if rcode == dns.rcode.NXDOMAIN:
            self.counters.nxdomain += 1
        elif rcode == dns.rcode.NOERROR:
            self.counters.local += 1
        limit = (
            65535 if tcp else max(MIN_UDP_PAYLOAD, min(q.payload if q.edns >= 0 else MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        )
        try:
            return Reply(r.to_wire(max_size=limit))
        except dns.exception.TooBig:
            r.answer.clear()
            r.flags |= dns.flags.TC
            return Reply(r.to_wire(max_size=limit))


__all__ = ["Resolver", "Reply", "Forward", "Drop", "Action", "Counters", "MAX_QUERY_BYTES", "fqdn"]
