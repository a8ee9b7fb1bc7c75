"""tailcfg Node, Hostinfo, NetInfo, PeerChange and UserProfile wire types (Go field names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tailcfg.codec import go
from engine.tailcfg.dns import DNSResolver
from engine.types.keys import DiscoPublic, MachinePublic, NodePublic

DERP_MAGIC_IP = "127.3.3.40"  # legacy Node.DERP "127.3.3.40:<region>"


@dataclass(frozen=True, slots=True)
class NetInfo:
    """Hostinfo.NetInfo: what the node learned about its network (netcheck)."""

    mapping_varies_by_dest_ip: bool | None = go("MappingVariesByDestIP")  # opt.Bool
    working_ipv6: bool | None = go("WorkingIPv6")
    os_has_ipv6: bool | None = go("OSHasIPv6")
    working_udp: bool | None = go("WorkingUDP")
    working_icmpv4: bool | None = go("WorkingICMPv4")
    have_port_map: bool | None = go("HavePortMap")
    upnp: bool | None = go("UPnP")
    pmp: bool | None = go("PMP")
    pcp: bool | None = go("PCP")
    preferred_derp: int | None = go("PreferredDERP")  # home DERP region; Headscale copies it to Node.HomeDERP
    link_type: str | None = go("LinkType")
    derp_latency: dict[str, float] | None = go("DERPLatency")
    firewall_mode: str | None = go("FirewallMode")


@dataclass(frozen=True, slots=True)
class Hostinfo:
    """Hostinfo: fields the client reports about itself (None = not sent)."""

    ipn_version: str | None = go("IPNVersion")
    frontend_log_id: str | None = go("FrontendLogID")
    backend_log_id: str | None = go("BackendLogID")
    os: str | None = go("OS")
    os_version: str | None = go("OSVersion")
    container: bool | None = go("Container")
    env: str | None = go("Env")
    distro: str | None = go("Distro")
    distro_version: str | None = go("DistroVersion")
    app: str | None = go("App")
    desktop: bool | None = go("Desktop")
    package: str | None = go("Package")
    device_model: str | None = go("DeviceModel")
    hostname: str | None = go("Hostname")
    shields_up: bool | None = go("ShieldsUp")
    sharee_node: bool | None = go("ShareeNode")
    no_logs_no_support: bool | None = go("NoLogsNoSupport")
    machine: str | None = go("Machine")
    go_arch: str | None = go("GoArch")
    go_version: str | None = go("GoVersion")
    routable_ips: tuple[str, ...] | None = go("RoutableIPs")
    request_tags: tuple[str, ...] | None = go("RequestTags")
    services: Any = go("Services")
    net_info: NetInfo | None = go("NetInfo")
    ssh_host_keys: tuple[str, ...] | None = go("SSH_HostKeys")
    userspace: bool | None = go("Userspace")
    userspace_router: bool | None = go("UserspaceRouter")
    exit_node_id: str | None = go("ExitNodeID")
    location: Any = go("Location")


@dataclass(frozen=True, slots=True)
class Node:
    """tailcfg.Node: a node (self or peer) as the control server describes it.

    ``allowed_ips`` None means "same as addresses" (capver >= 112); ``online``/``last_seen``
    None mean unknown. ``home_derp`` 0 means none; the legacy ``derp`` text
    ("127.3.3.40:<region>") is converted by ``effective_home_derp``.
    """

    id: int = go("ID", default=0)
    stable_id: str = go("StableID", default="")
    name: str = go("Name", default="")  # FQDN with trailing dot
    user: int = go("User", default=0)
    sharer: int | None = go("Sharer")
    key: NodePublic = go("Key", default_factory=NodePublic.zero)
    key_expiry: str | None = go("KeyExpiry")  # RFC 3339; zero = never
    key_signature: str | None = go("KeySignature")
    machine: MachinePublic | None = go("Machine")
    disco_key: DiscoPublic | None = go("DiscoKey")
    addresses: tuple[str, ...] = go("Addresses", default=())
    allowed_ips: tuple[str, ...] | None = go("AllowedIPs")
    endpoints: tuple[str, ...] | None = go("Endpoints")
    derp: str | None = go("DERP")  # legacy
    home_derp: int = go("HomeDERP", default=0)
    hostinfo: Hostinfo | None = go("Hostinfo")
    created: str | None = go("Created")
    cap: int | None = go("Cap")
    tags: tuple[str, ...] | None = go("Tags")
    primary_routes: tuple[str, ...] | None = go("PrimaryRoutes")
    last_seen: str | None = go("LastSeen")
    online: bool | None = go("Online")
    machine_authorized: bool | None = go("MachineAuthorized")
    capabilities: tuple[str, ...] | None = go("Capabilities")
    cap_map: dict[str, Any] | None = go("CapMap")
    expired: bool | None = go("Expired")
    is_wireguard_only: bool | None = go("IsWireGuardOnly")
    exit_node_dns_resolvers: tuple[DNSResolver, ...] | None = go("ExitNodeDNSResolvers")  # WireGuard-only exit nodes
    is_jailed: bool | None = go("IsJailed")
    self_node_v4_masq_addr_for_this_peer: str | None = go("SelfNodeV4MasqAddrForThisPeer")

    def effective_home_derp(self) -> int:
        if self.home_derp:
            return self.home_derp
        if self.derp and self.derp.startswith(DERP_MAGIC_IP + ":"):
            try:
                return int(self.derp.rsplit(":", 1)[1])
            except ValueError:
                return 0
        return 0

    def effective_allowed_ips(self) -> tuple[str, ...]:
        return self.addresses if self.allowed_ips is None else self.allowed_ips

    def display_name(self) -> str:
        """First label of Name (the host's MagicDNS short name)."""
        return self.name.split(".", 1)[0] if self.name else ""


@dataclass(frozen=True, slots=True)
class PeerChange:
    """MapResponse.PeersChangedPatch element: only non-None fields changed."""

    node_id: int = go("NodeID", default=0)
    derp_region: int | None = go("DERPRegion")
    cap: int | None = go("Cap")
    cap_map: dict[str, Any] | None = go("CapMap")
    endpoints: tuple[str, ...] | None = go("Endpoints")
    key: NodePublic | None = go("Key")
    key_signature: str | None = go("KeySignature")
    disco_key: DiscoPublic | None = go("DiscoKey")
    online: bool | None = go("Online")
    last_seen: str | None = go("LastSeen")
    key_expiry: str | None = go("KeyExpiry")


@dataclass(frozen=True, slots=True)
class UserProfile:
    id: int = go("ID", default=0)
    login_name: str = go("LoginName", default="")
    display_name: str = go("DisplayName", default="")
    profile_pic_url: str | None = go("ProfilePicURL")


@dataclass(frozen=True, slots=True)
class User:
    id: int = go("ID", default=0)
    display_name: str = go("DisplayName", default="")
    profile_pic_url: str | None = go("ProfilePicURL")
    created: str | None = go("Created")


@dataclass(frozen=True, slots=True)
class Login:
    id: int = go("ID", default=0)
    provider: str | None = go("Provider")
    login_name: str = go("LoginName", default="")
    display_name: str = go("DisplayName", default="")
    profile_pic_url: str | None = go("ProfilePicURL")
