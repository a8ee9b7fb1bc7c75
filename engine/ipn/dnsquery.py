"""DNS debugging helpers for the LocalAPI (pure): query-type names, name checks, the query built, upstream views.

`/localapi/v0/dns-query?name=N&type=T` resolves N through MagicDNS exactly as a client of
100.100.100.100 would (over TCP, so local answers are never truncated). Facts from tailscale
(ipn/localapi serveDNSQuery, LocalBackend.QueryDNS): the type is a record type name, case-insensitive,
"A" when empty; the name is made fully qualified; the query has RD set and no EDNS.
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from engine.dns.config import DoHUpstream, Upstream
from engine.ipn.engine_api import DNSResolverView

# The type names tailscale's dns-query accepts (golang.org/x/net/dns/dnsmessage), with their codes (RFC 1035 §3.2.2,
# RFC 3596, RFC 2782, RFC 6891). ALL is the QTYPE "*" (255).
QUERY_TYPES: dict[str, int] = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "WKS": 11,
    "PTR": 12,
    "HINFO": 13,
    "MINFO": 14,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "OPT": 41,
    "ALL": 255,
}
MAX_NAME_TEXT = 253  # characters of a name without its trailing dot (RFC 1035 §2.3.4: 255 octets on the wire)


class QueryError(ValueError):
    """A bad name or type in a dns-query request (HTTP 400)."""


def parse_query_type(text: str) -> int:
    """ "aaaa" -> 28; "" -> A; a bare number 1..65535 is accepted too (an extension over tailscale)."""
    s = text.strip().upper()
    if not s:
        return QUERY_TYPES["A"]
    if s in QUERY_TYPES:
        return QUERY_TYPES[s]
    if s.isdigit() and 0 < int(s) < 65536:
        return int(s)
    raise QueryError(f"unknown DNS message type: {s}")


def type_name(code: int) -> str:
    """28 -> "AAAA"; unknown codes as "TYPE<n>" (RFC 3597)."""
    for k, v in QUERY_TYPES.items():
        if v == code:
            return k
    return f"TYPE{code}"


def to_fqdn(name: str) -> str:
    """A checked, lower-cased FQDN with trailing dot ("peer1" stays single-label: quad-100 expands it)."""
    n = name.strip()
    if not n:
        raise QueryError("missing 'name' parameter")
    if n == ".":
        return "."
    if len(n.rstrip(".")) > MAX_NAME_TEXT:
        raise QueryError(f"invalid name {n[:40]!r}...: longer than {MAX_NAME_TEXT} characters")
    if any(c.isspace() or not c.isprintable() for c in n) or "\\" in n:
        raise QueryError(f"invalid name {n!r}: spaces, control characters and escapes are not allowed")
    try:
        dn = dns.name.from_text(n)
    except (dns.exception.DNSException, UnicodeError) as e:
        raise QueryError(f"invalid name {n!r}: {e}") from None
    return dn.to_text().lower()


def build_query(fqdn: str, qtype: int) -> bytes:
    """The query sent to quad-100: one question (class IN), RD set, no EDNS."""
    q = dns.message.make_query(fqdn, dns.rdatatype.RdataType.make(qtype), dns.rdataclass.IN, use_edns=False)
    q.flags = dns.flags.RD
    return q.to_wire()


def resolver_view(up: Upstream | DoHUpstream) -> DNSResolverView:
    """An upstream as tailscale's dnstype.Resolver shows it: "ip" for port 53, else "ip:port"; DoH by URL."""
    if isinstance(up, DoHUpstream):
        literal = up.server_name in up.addrs
        return DNSResolverView(addr=up.url, bootstrap=() if literal else tuple(up.addrs))
    return DNSResolverView(addr=up.host if up.port == 53 else str(up))
