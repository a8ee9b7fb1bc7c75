"""Tailscale control-protocol JSON wire types (tailcfg), with Go field names."""

from engine.tailcfg.capver import CURRENT_CAPABILITY_VERSION
from engine.tailcfg.codec import WireError, decode, encode
from engine.tailcfg.derp import DERPMap, DERPNode, DERPRegion
from engine.tailcfg.dns import DNSConfig, DNSRecord, DNSResolver
from engine.tailcfg.filter import FILTER_ALLOW_ALL, FilterRule, NetPortRange, PortRange
from engine.tailcfg.messages import (
    EarlyNoise,
    MapRequest,
    MapResponse,
    OverTLSPublicKeyResponse,
    PingRequest,
    RegisterAuth,
    RegisterRequest,
    RegisterResponse,
)
from engine.tailcfg.node import Hostinfo, Login, NetInfo, Node, PeerChange, User, UserProfile

__all__ = [
    "CURRENT_CAPABILITY_VERSION",
    "WireError",
    "decode",
    "encode",
    "DERPMap",
    "DERPNode",
    "DERPRegion",
    "DNSConfig",
    "DNSRecord",
    "DNSResolver",
    "FILTER_ALLOW_ALL",
    "FilterRule",
    "NetPortRange",
    "PortRange",
    "EarlyNoise",
    "MapRequest",
    "MapResponse",
    "OverTLSPublicKeyResponse",
    "PingRequest",
    "RegisterAuth",
    "RegisterRequest",
    "RegisterResponse",
    "Hostinfo",
    "Login",
    "NetInfo",
    "Node",
    "PeerChange",
    "User",
    "UserProfile",
]
