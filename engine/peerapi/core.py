"""peerAPI request core (sans-IO): a parsed HTTP request in, a Response or a DNS query to answer out.

    accept_connection(remote_ip) -> bool               unknown source address: close unanswered
    handle(Request) -> Response                        errors, "/", unknown paths
                    | DNSQuery(query, pretty)          "/dns-query": the adapter asks the resolver,
    finish_dns(DNSQuery, DNSAnswer) -> Response        then turns its answer into the HTTP reply

DNS over HTTP (RFC 8484, over plain HTTP inside WireGuard, as tailscale's exit-node DNS proxy):
    GET  /dns-query?dns=<base64url DNS message, padding optional>
    POST /dns-query   Content-Type: application/dns-message, body = DNS message
    GET  /dns-query?q=<name>[&t=a|aaaa|txt]           debug form: JSON list of the answers
Reply: 200, Content-Type application/dns-message (JSON for the debug form). A DNS-level failure
(NXDOMAIN, SERVFAIL from upstream) is still 200 with that DNS reply; HTTP errors are for what is
wrong with the HTTP request (4xx) or when no DNS reply could be produced at all (5xx, which
tailscale's client turns into SERVFAIL).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from engine.dns.resolver import MAX_QUERY_BYTES
from engine.peerapi.access import Access

DNS_MESSAGE = "application/dns-message"
MAX_DNS_QUERY_BYTES = MAX_QUERY_BYTES  # larger queries are junk to our resolver as well
SIZE_DNS_HEADER = 12
DNS_PATH = "/dns-query"  # prefix match, as tailscale
_SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; script-src 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the adapter parsed it (header names lower-case, values latin-1 text)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    remote: str = ""  # source IP of the TCP connection

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Response:
    """What to send back; the adapter adds Content-Length."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class DNSQuery:
    """Answer ``query`` with our MagicDNS resolver, then call finish_dns."""

    query: bytes
    pretty: bool = False
    security_headers: bool = False


@dataclass(frozen=True, slots=True)
class DNSAnswer:
    """What the resolver produced: a reply, nothing (query dropped as junk), a timeout or an error."""

    reply: bytes | None = None
    timed_out: bool = False
    failed: bool = False


@dataclass
class Counters:
    """Requests by outcome (for status and tests)."""

    connections_rejected: int = 0
    requests: int = 0
    dns_queries: int = 0
    dns_replies: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, status: int, reason: str | None = None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if reason is not None:
            self.errors[reason] = self.errors.get(reason, 0) + 1


def _text(status: int, msg: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        status,
        (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"), *extra),
        (msg + "\n").encode(),
    )


def wants_security_headers(req: Request) -> bool:
    """Browser-looking requests get the anti-framing/anti-sniffing headers; DNS clients save the bytes."""
    ae = (req.header("accept-encoding") or "").lower()
    if "deflate" in [t.strip().split(";")[0] for t in ae.split(",")]:
        return True
    ua = req.header("user-agent") or ""
    if ua.startswith("Mozilla/") or ua.count(" ") > 2:
        return True
    return req.header("accept-language") is not None


class PeerAPICore:
    """Decides every peerAPI request from an Access snapshot (set_access on each netmap)."""

    def __init__(self, access: Access | None = None, *, dns_available: bool = True, self_name: str = "") -> None:
        self.access = access or Access()
        self.dns_available = dns_available
        self.self_name = self_name
        self.counters = Counters()

    def set_access(self, access: Access) -> None:
        self.access = access

    # -- entry points ---------------------------------------------------------------------
    def accept_connection(self, remote: str) -> bool:
        """A new TCP connection from ``remote``: only known tailnet nodes get an HTTP server."""
        if self.access.who_is(remote) is None:
            self.counters.connections_rejected += 1
            return False
        return True

    def handle(self, req: Request) -> Response | DNSQuery:
        self.counters.requests += 1
        peer = self.access.who_is(req.remote)
        if peer is None:
            return self._error(403, "unknown peer", "unknown-peer")
        if (
            req.header("referer") is not None
            or req.header("origin") is not None
            or not self.access.host_valid(req.header("host"))
        ):
            return self._error(403, "invalid peerapi request", "invalid-request")
        sec = wants_security_headers(req)
        try:
            path = urlsplit(req.target).path if req.target else ""
        except ValueError:  # e.g. "//[]/": urlsplit checks a bracketed host
            return self._error(400, "invalid request target", "bad-target")
        if path.startswith(DNS_PATH):
            out = self._dns(req, sec)
        elif path == "/":
            if req.method not in ("GET", "HEAD"):
                out = self._error(405, "method not allowed", "bad-method", (("Allow", "GET, HEAD"),))
            else:
                self.counters.count(200)
                who = peer.name or req.remote
                out = _text(200, f"meshvpn peerAPI of {self.self_name or 'this node'}; you are {who}")
        else:
            out = self._error(404, "unsupported peerapi path", "not-found")
        if sec and isinstance(out, Response):
            out = Response(out.status, _merge(out.headers, _SECURITY_HEADERS), out.body)
        return out

    def finish_dns(self, q: DNSQuery, ans: DNSAnswer) -> Response:
        """The HTTP reply for a DNSQuery handle() returned."""
        if ans.timed_out:
            out = self._error(504, "DNS query timed out", "dns-timeout")
        elif ans.failed:
            out = self._error(502, "DNS forwarding error", "dns-error")
        elif ans.reply is None:
            out = self._error(400, "invalid DNS query", "dns-dropped")
        else:
            self.counters.dns_replies += 1
            self.counters.count(200)
            if q.pretty:
                out = Response(200, (("Content-Type", "application/json"),), pretty_reply(ans.reply))
            else:
                out = Response(200, (("Content-Type", DNS_MESSAGE),), ans.reply)
        if q.security_headers:
            out = Response(out.status, _merge(out.headers, _SECURITY_HEADERS), out.body)
        return out

    # -- /dns-query -----------------------------------------------------------------------
    def _dns(self, req: Request, sec: bool) -> Response | DNSQuery:
        if not self.dns_available:
            return self._error(501, "DNS not wired up", "dns-unavailable")
        if not self.access.may_query_dns(req.remote):
            return self._error(403, "DNS access denied", "dns-denied")
        if req.method == "GET":
            form = parse_qs(urlsplit(req.target).query, keep_blank_values=True)
            q64 = (form.get("dns") or [""])[0]
            if not q64:
                name = (form.get("q") or [""])[0]
                if name:
                    return self._debug_query(name, (form.get("t") or [""])[0], sec)
                return self._error(
                    400,
                    "missing 'dns' parameter; try '?dns=' (DoH standard) or '?q=<name>' for JSON debug mode",
                    "dns-missing",
                )
            q64 = q64.rstrip("=")
            if len(q64) * 3 // 4 > MAX_DNS_QUERY_BYTES:
                return self._error(413, "query too large", "dns-oversize")
            try:
                query = base64.b64decode(q64 + "=" * (-len(q64) % 4), altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                return self._error(400, "invalid 'dns' base64 encoding", "dns-base64")
        elif req.method == "POST":
            ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
            if ctype != DNS_MESSAGE:
                return self._error(415, f"unexpected Content-Type; want {DNS_MESSAGE}", "dns-content-type")
            if len(req.body) > MAX_DNS_QUERY_BYTES:
                return self._error(413, "query too large", "dns-oversize")
            query = req.body
        else:
            return self._error(405, "bad HTTP method", "bad-method", (("Allow", "GET, POST"),))
        if len(query) < SIZE_DNS_HEADER:
            return self._error(400, "DNS query too short", "dns-short")
        if query[2] & 0x80:
            return self._error(400, "not a DNS query (QR bit set)", "dns-not-query")
        self.counters.dns_queries += 1
        return DNSQuery(query, security_headers=sec)

    def _debug_query(self, name: str, typ: str, sec: bool) -> Response | DNSQuery:
        rdtype = {"aaaa": dns.rdatatype.AAAA, "txt": dns.rdatatype.TXT}.get(typ.lower(), dns.rdatatype.A)
        try:
            m = dns.message.make_query(dns.name.from_text(name if name.endswith(".") else name + "."), rdtype)
        except Exception:  # noqa: BLE001 - dnspython raises several types for a bad name
            return self._error(400, "invalid name in 'q'", "dns-bad-name")
        m.id = 1  # arbitrary, but some servers reject 0
        self.counters.dns_queries += 1
        return DNSQuery(m.to_wire(), pretty=True, security_headers=sec)

    def _error(self, status: int, msg: str, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
        self.counters.count(status, reason)
        return _text(status, msg, extra)


def _merge(headers: tuple[tuple[str, str], ...], more: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    have = {k.lower() for k, _ in headers}
    return headers + tuple((k, v) for k, v in more if k.lower() not in have)


def pretty_reply(wire: bytes) -> bytes:
    """The debug form's body: a JSON list of the A/AAAA/TXT answers, or {"Error": ...}."""
    try:
        m = dns.message.from_wire(wire)
        if m.rcode() != dns.rcode.NOERROR:
            raise ValueError(f"DNS RCode = {dns.rcode.to_text(m.rcode())}")
        got: list[str] = []
        for rrset in m.answer:
            if rrset.rdclass != dns.rdataclass.IN:
                continue
            for rd in rrset:
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    got.append(rd.address)
                elif rrset.rdtype == dns.rdatatype.TXT:
                    got.extend(s.decode("utf-8", "replace") for s in rd.strings)
        return (json.dumps(got) + "\n").encode()
    except Exception as e:  # noqa: BLE001 - debug output only
        return (json.dumps({"Error": str(e)}) + "\n").encode()
