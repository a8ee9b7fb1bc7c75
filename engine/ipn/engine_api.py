"""The narrow interface between the IPN backend and the node engine (control client + data plane).

The backend owns the user-facing state (prefs, ipn.State, the IPN bus); the engine owns the
network: it logs in to control, follows the map stream, configures WireGuard, the router and
DNS. They meet here:

    backend --start(EngineConfig, NodeKeys, sink)--> engine      (and stop/reconfigure/...)
    engine  --sink(EngineEvent)--------------------> backend     (AuthURL, LoggedIn, NetMap, ...)

Rules for implementations:
- `sink` is a plain callable; call it from the event loop thread, never block in it.
- `start` returns once the engine has *begun* (control dial may still be in progress); progress
  is reported through events. `stop` tears down the data plane and the control session, leaving
  the system as it was (routes/rules/DNS restored), and is idempotent.
- `status()` is a cheap synchronous snapshot (no I/O).
- Nothing here carries a private key except NodeKeys and NodeKeyRotated, whose reprs are redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from engine.net.tsaddr import contains_exit_routes
from engine.types.keys import MachinePrivate, NodePrivate, NodePublic


@dataclass(frozen=True)
class NodeKeys:
    """The node's long-lived keys (from the GUI's keyring, the headless state file, or generated)."""

    machine: MachinePrivate
    node: NodePrivate
    source: str = "generated"  # "gui" | "state-file" | "generated"

    def __repr__(self) -> str:
        return (
            f"NodeKeys(machine={self.machine.public().short()}, node={self.node.public().short()}, "
            f"source={self.source})"
        )


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs from prefs. Derived by backend.engine_config(prefs) (pure)."""

    control_url: str
    hostname: str = ""
    auth_key: str = field(default="", repr=False)  # one-shot; only passed to start()
    exit_node_id: str = ""  # StableNodeID of the selected exit node ("" = none)
    exit_node_ip: str = ""  # the same by IP, when the ID is not yet known
    exit_node_allow_lan_access: bool = False
    corp_dns: bool = True  # accept DNS config (MagicDNS) from control
    route_all: bool = False  # accept subnet routes
    advertise_routes: tuple[str, ...] = ()  # incl. 0.0.0.0/0 + ::/0 for --advertise-exit-node
    shields_up: bool = False


# ---- views the engine reports (plain data; the backend turns them into ipnstate.Status) ----


@dataclass(frozen=True)
class PeerView:
    """One node of the netmap plus its live data-plane state."""

    node_id: int
    stable_id: str
    node_key: str  # "nodekey:<hex>"
    name: str  # FQDN with trailing dot, e.g. "peer1.tail.example.com."
    hostname: str = ""  # Hostinfo.Hostname
    os: str = ""
    user_id: int = 0
    addresses: tuple[str, ...] = ()  # Tailscale IPs, no prefix length
    allowed_ips: tuple[str, ...] = ()  # prefixes
    primary_routes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    online: bool = False
    last_seen: str = ""  # RFC 3339 or ""
    key_expiry: str = ""  # RFC 3339 or ""
    expired: bool = False
    created: str = ""
    endpoints: tuple[str, ...] = ()  # candidate ip:port
    home_derp: int = 0  # region id
    # live path state (magicsock / wg device)
    cur_addr: str = ""  # ip:port of the direct path in use, "" if none
    relay: str = ""  # DERP region code used when no direct path ("" if unknown)
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float = 0.0  # unix seconds, 0 = never
    last_write: float = 0.0
    active: bool = False  # traffic in the last couple of minutes
    location: dict[str, Any] | None = None

    @property
    def exit_node_option(self) -> bool:
        """Offers exit service iff AllowedIPs holds both default routes (tsaddr.ContainsExitRoutes)."""
        return contains_exit_routes(self.allowed_ips)


@dataclass(frozen=True)
class UserView:
    id: int
    login_name: str
    display_name: str = ""
    profile_pic_url: str = ""


@dataclass(frozen=True)
class NetMapView:
    """The parts of the netmap the LocalAPI shows."""

    self_node: PeerView
    peers: tuple[PeerView, ...] = ()
    users: tuple[UserView, ...] = ()
    domain: str = ""  # tailnet name
    magic_dns_suffix: str = ""  # e.g. "tail.example.com"
    magic_dns_enabled: bool = False
    derp_regions: dict[int, str] = field(default_factory=dict)  # region id -> code
    derp_map: dict[str, Any] | None = None  # tailcfg.DERPMap JSON, served on /localapi/v0/derpmap
    dns_config: dict[str, Any] | None = None  # tailcfg.DNSConfig JSON from control (NetworkMap.DNS); None = none sent


@dataclass(frozen=True)
class EngineSnapshot:
    """`engine.status()`: the latest netmap (None before the first) plus counters and health."""

    netmap: NetMapView | None = None
    health: tuple[str, ...] = ()
    live_derps: int = 0
    tun: bool = False


# ---- events from the engine to the backend ----


@dataclass(frozen=True)
class AuthURL:
    url: str


@dataclass(frozen=True)
class LoginNeeded:
    reason: str = ""


@dataclass(frozen=True)
class MachineAuthNeeded:
    pass


@dataclass(frozen=True)
class LoggedIn:
    user: UserView
    node_id: str = ""  # StableNodeID


@dataclass(frozen=True)
class NetMapUpdate:
    netmap: NetMapView


@dataclass(frozen=True)
class EngineUp:
    """The data plane is configured from a netmap (tailscaled: first netmap + engine reconfig)."""


@dataclass(frozen=True)
class EngineFailed:
    message: str


@dataclass(frozen=True)
class NodeKeyRotated:
    """Control made the node re-register under a new node key (key expiry → re-login).

    The engine already runs on ``new_private``; the backend must make it outlive the process (the
    GUI's keyring, or the state file). ``old_public`` is the key it replaced. Prints public forms only.
    """

    old_public: NodePublic
    new_private: NodePrivate = field(repr=False)

    def __repr__(self) -> str:
        return f"NodeKeyRotated(old={self.old_public.short()}, new={self.new_private.public().short()})"


EngineEvent = (
    AuthURL | LoginNeeded | MachineAuthNeeded | LoggedIn | NetMapUpdate | EngineUp | EngineFailed | NodeKeyRotated
)
EventSink = Callable[[EngineEvent], None]


@dataclass(frozen=True)
class PingOutcome:
    """Result of engine.ping (mirrors ipnstate.PingResult's meaningful fields)."""

    node_ip: str = ""
    node_name: str = ""
    err: str = ""
    latency_seconds: float = 0.0
    endpoint: str = ""  # ip:port when answered over a direct path
    derp_region_id: int = 0  # when answered via DERP
    derp_region_code: str = ""


class DNSUnavailable(RuntimeError):
    """The engine runs without MagicDNS (its quad-100 server could not start, or the engine is stopped)."""


@dataclass(frozen=True)
class DNSResolverView:
    """One upstream resolver (tailscale dnstype.Resolver): "ip", "ip:port", or a DoH URL (+ its bootstrap IPs)."""

    addr: str
    bootstrap: tuple[str, ...] = ()


@dataclass(frozen=True)
class DNSOSView:
    """The OS DNS settings the engine applied, and the system's own resolvers from before.

    applied=False: the OS is left alone (accept-dns off, `--dns-mode none`, or a namespace sharing the
    host's resolv.conf); the three lists are then empty.
    """

    applied: bool = False
    nameservers: tuple[str, ...] = ()
    search_domains: tuple[str, ...] = ()  # without trailing dots
    match_domains: tuple[str, ...] = ()  # without trailing dots; with route_all the OS sends everything anyway
    route_all: bool = False
    base_nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DNSQueryOutcome:
    """A query answered by MagicDNS as quad-100 would: the raw reply and where it was forwarded (() = locally)."""

    reply: bytes
    resolvers: tuple[DNSResolverView, ...] = ()


@runtime_checkable
class NodeEngine(Protocol):
    """What the backend drives. Implemented by TailnetEngine (engine/ipn/tailnet_engine.py); tests fake it."""

    async def start(self, cfg: EngineConfig, keys: NodeKeys, sink: EventSink) -> None:
        """Begin: log in to control (with cfg.auth_key if set), then follow the map and bring the data plane up."""

    async def reconfigure(self, cfg: EngineConfig) -> None:
        """Prefs changed while running (exit node, routes, DNS, hostname): apply idempotently."""

    async def stop(self) -> None:
        """Tear down data plane and control session; restore routes/rules/DNS. Idempotent."""

    async def login_interactive(self) -> None:
        """Ask control for an interactive login; the URL comes back as an AuthURL event."""

    async def logout(self) -> None:
        """Expire the node key at control (best effort) and stop."""

    def status(self) -> EngineSnapshot:
        """Cheap snapshot of the netmap and live peer state."""

    async def ping(self, ip: str, kind: str, size: int) -> PingOutcome:
        """disco / TSMP / ICMP ping of a Tailscale IP; returns how it was answered."""

    async def netcheck(self) -> dict[str, Any]:
        """A netcheck report (UDP, public address, NAT mapping, DERP latencies) as a JSON object."""

    def dns_os_config(self) -> DNSOSView:
        """The OS DNS configuration applied (raises DNSUnavailable without MagicDNS)."""

    async def dns_query(self, name: str, qtype: int) -> DNSQueryOutcome:
        """Resolve `name` (FQDN) / `qtype` through MagicDNS as a TCP query to quad-100 would (raises DNSUnavailable)."""

    def debug_status(self) -> dict[str, Any]:
        """Engine internals for operators and lab tests (counters, applied prefs, per-peer paths; no secrets)."""

    async def aclose(self) -> None:
        """Release everything (called once at shutdown, after stop)."""
