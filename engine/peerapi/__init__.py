"""peerAPI: the HTTP service on our tailnet addresses (DNS-over-HTTP "/dns-query" for exit-node clients)."""

from engine.peerapi.access import Access, PeerIdentity, access_from_netmap
from engine.peerapi.core import Counters, DNSAnswer, DNSQuery, PeerAPICore, Request, Response
from engine.peerapi.ports import candidate_ports, services

__all__ = [
    "Access",
    "PeerIdentity",
    "access_from_netmap",
    "Counters",
    "DNSAnswer",
    "DNSQuery",
    "PeerAPICore",
    "Request",
    "Response",
    "candidate_ports",
    "services",
]
