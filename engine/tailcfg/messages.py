"""tailcfg request/response messages: /key, EarlyNoise, Register*, Map*, PingRequest.

In MapResponse every field that is None means "unchanged since the previous message of
this stream" (Node, DERPMap, DNSConfig, PacketFilter, PacketFilters, Domain, ...). A
non-None *empty* PacketFilter means "block everything"; PacketFilters values of None
delete that chunk and the key "*" with None clears all chunks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tailcfg.codec import go
from engine.tailcfg.derp import DERPMap
from engine.tailcfg.dns import DNSConfig
from engine.tailcfg.filter import FilterRule
from engine.tailcfg.node import Hostinfo, Login, Node, PeerChange, User, UserProfile
from engine.types.keys import ChallengePublic, DiscoPublic, MachinePublic, NLPublic, NodePublic


@dataclass(frozen=True, slots=True)
class OverTLSPublicKeyResponse:
    """GET /key?v=N answer; only public_key (the Noise static key) matters."""

    legacy_public_key: MachinePublic | None = go("legacyPublicKey")
    public_key: MachinePublic | None = go("publicKey")


@dataclass(frozen=True, slots=True)
class EarlyNoise:
    """The early payload the server sends before HTTP/2 (ts2021 conn.go)."""

    node_key_challenge: ChallengePublic | None = go("nodeKeyChallenge")


@dataclass(frozen=True, slots=True)
class RegisterAuth:
    """RegisterRequest.Auth (Go: RegisterResponseAuth)."""

    auth_key: str | None = go("AuthKey")


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    version: int = go("Version", default=0)
    node_key: NodePublic = go("NodeKey", default_factory=NodePublic.zero)
    old_node_key: NodePublic = go("OldNodeKey", default_factory=NodePublic.zero)
    nl_key: NLPublic | None = go("NLKey")
    auth: RegisterAuth | None = go("Auth")
    expiry: str | None = go("Expiry")  # a past time = logout
    followup: str | None = go("Followup")  # AuthURL being waited for (long-poll)
    hostinfo: Hostinfo | None = go("Hostinfo")
    ephemeral: bool | None = go("Ephemeral")
    timestamp: str | None = go("Timestamp")
    tailnet: str | None = go("Tailnet")

    def __repr__(self) -> str:  # never show the auth key
        return (
            f"RegisterRequest(version={self.version}, node_key={self.node_key.short()}, "
            f"auth={'<set>' if self.auth else None}, followup={self.followup!r}, expiry={self.expiry!r})"
        )


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    user: User | None = go("User")
    login: Login | None = go("Login")
    node_key_expired: bool = go("NodeKeyExpired", default=False)
    machine_authorized: bool = go("MachineAuthorized", default=False)
    auth_url: str = go("AuthURL", default="")
    node_key_signature: str | None = go("NodeKeySignature")
    error: str = go("Error", default="")


@dataclass(frozen=True, slots=True)
class MapRequest:
    version: int = go("Version", default=0)
    compress: str | None = go("Compress")  # "zstd"
    keep_alive: bool = go("KeepAlive", default=True)
    node_key: NodePublic = go("NodeKey", default_factory=NodePublic.zero)
    disco_key: DiscoPublic = go("DiscoKey", default_factory=DiscoPublic.zero)
    endpoints: tuple[str, ...] | None = go("Endpoints")
    endpoint_types: tuple[int, ...] | None = go("EndpointTypes")
    tka_head: str | None = go("TKAHead")
    hostinfo: Hostinfo | None = go("Hostinfo")
    stream: bool = go("Stream", default=False)
    omit_peers: bool = go("OmitPeers", default=False)
    debug_flags: tuple[str, ...] | None = go("DebugFlags")
    map_session_handle: str | None = go("MapSessionHandle")
    map_session_seq: int | None = go("MapSessionSeq")


# EndpointTypes values (tailcfg.EndpointType)
ENDPOINT_UNKNOWN = 0
ENDPOINT_LOCAL = 1
ENDPOINT_STUN = 2
ENDPOINT_PORTMAPPED = 3
ENDPOINT_STUN4LOCALPORT = 4
ENDPOINT_EXPLICIT_CONF = 5


@dataclass(frozen=True, slots=True)
class PingRequest:
    """Control asks for proof of life: with empty Types, answer with HTTP HEAD to URL."""

    url: str = go("URL", default="")
    url_is_noise: bool | None = go("URLIsNoise")
    log: bool | None = go("Log")
    types: str | None = go("Types")
    ip: str | None = go("IP")
    payload: Any = go("Payload")


@dataclass(frozen=True, slots=True)
class MapResponse:
    """One message of the map stream; None fields are unchanged (see module docstring)."""

    keep_alive: bool = go("KeepAlive", default=False)
    ping_request: PingRequest | None = go("PingRequest")
    pop_browser_url: str | None = go("PopBrowserURL")
    node: Node | None = go("Node")
    derp_map: DERPMap | None = go("DERPMap")
    peers: tuple[Node, ...] | None = go("Peers")
    peers_changed: tuple[Node, ...] | None = go("PeersChanged")
    peers_removed: tuple[int, ...] | None = go("PeersRemoved")
    peers_changed_patch: tuple[PeerChange, ...] | None = go("PeersChangedPatch")
    peer_seen_change: dict[int, bool] | None = go("PeerSeenChange")
    online_change: dict[int, bool] | None = go("OnlineChange")
    dns_config: DNSConfig | None = go("DNSConfig")
    domain: str | None = go("Domain")
    collect_services: bool | None = go("CollectServices")
    packet_filter: tuple[FilterRule, ...] | None = go("PacketFilter")
    packet_filters: dict[str, tuple[FilterRule, ...] | None] | None = go("PacketFilters")
    user_profiles: tuple[UserProfile, ...] | None = go("UserProfiles")
    health: tuple[str, ...] | None = go("Health")
    ssh_policy: Any = go("SSHPolicy")
    control_time: str | None = go("ControlTime")
    tka_info: Any = go("TKAInfo")
    debug: Any = go("Debug")
    client_version: Any = go("ClientVersion")
    display_messages: Any = go("DisplayMessages")
    map_session_handle: str | None = go("MapSessionHandle")
    seq: int | None = go("Seq")

    def is_keepalive_only(self) -> bool:
        """True for {"KeepAlive":true} messages (possibly with a PingRequest/ControlTime only)."""
        return (
            self.keep_alive
            and self.node is None
            and self.peers is None
            and self.peers_changed is None
            and self.peers_removed is None
            and self.peers_changed_patch is None
            and self.derp_map is None
            and self.dns_config is None
            and self.packet_filter is None
            and self.packet_filters is None
            and self.online_change is None
            and self.peer_seen_change is None
            and self.user_profiles is None
        )
