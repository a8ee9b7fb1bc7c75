"""Pure reducer from LocalAPI Notify/Status JSON (tailscaled shapes) to the GUI's ViewState; no Qt, no I/O.

Flow (STYLE R18):

    watch-ipn-bus Notify ─┐
    /status snapshot ─────┼──► reduce(ViewState, event, now) ──► ViewState ──► models / tray / window
    /ping result ─────────┤
    bridge events ────────┘   (helper up/down, access denied, login started/cancelled, errors)

Inputs are the raw JSON dicts of tailscaled's LocalAPI (ipn.Notify, ipnstate.Status,
ipnstate.PingResult); anything malformed is ignored field by field, never raised.
`now` is an argument (aware UTC datetime) so key-expiry decisions are testable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

# ipn.State numeric values as sent in Notify.State (ipn/backend.go).
IPN_STATES = ("NoState", "InUseOtherUser", "NeedsLogin", "NeedsMachineAuth", "Stopped", "Starting", "Running")

# Warn about node-key expiry this long ahead (Tailscale's KeyExpirationNotice default is 24 h).
KEY_EXPIRY_WARNING = dt.timedelta(hours=24)

# Go's zero time.Time marshals as this; it means "never" / "unknown".
_GO_ZERO_YEAR = 1


class TrayState(enum.Enum):
    """Top-level state shown by the tray icon; one menu builder per value."""

    HELPER_DOWN = "helper-down"  # socket unreachable: helper not running
    ERROR = "error"  # helper reachable but reports an error / unusable state
    NEEDS_LOGIN = "needs-login"  # NeedsLogin, or node key expired
    NEEDS_APPROVAL = "needs-approval"  # NeedsMachineAuth: an admin must approve the device
    STOPPED = "stopped"  # logged in, WantRunning false
    CONNECTING = "connecting"  # NoState / Starting
    CONNECTED = "connected"  # Running
    EXIT_NODE = "exit-node"  # Running with an exit node selected


class PathKind(enum.Enum):
    """How packets reach a peer right now."""

    UNKNOWN = "unknown"
    DIRECT = "direct"
    DERP = "derp"
    PEER_RELAY = "peer-relay"


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as the GUI shows it; `key` (node public key text) is the stable identity."""

    key: str
    id: str = ""  # StableNodeID (what ExitNodeID refers to)
    name: str = ""
    dns_name: str = ""
    os: str = ""
    ips: tuple[str, ...] = ()
    online: bool = False
    path: PathKind = PathKind.UNKNOWN
    path_detail: str = ""  # "203.0.113.7:41641" for direct, region code for DERP
    latency_ms: float | None = None
    last_handshake: dt.datetime | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    exit_node: bool = False
    exit_node_option: bool = False
    expired: bool = False
    user: str = ""

    @property
    def ipv4(self) -> str:
        return next((ip for ip in self.ips if ":" not in ip), "")

    @property
    def path_text(self) -> str:
        """Short path description: "direct 3 ms", "relay fra 41 ms", "relay fra", "—"."""
        lat = f" {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        if self.path is PathKind.DIRECT:
            return f"direct{lat}"
        if self.path is PathKind.DERP:
            return f"relay {self.path_detail}{lat}".replace("  ", " ").strip()
        if self.path is PathKind.PEER_RELAY:
            return f"peer relay{lat}"
        return "offline" if not self.online else "—"


@dataclass(frozen=True, slots=True)
class SelfView:
    """This device."""

    name: str = ""
    dns_name: str = ""
    ips: tuple[str, ...] = ()
    key_expiry: dt.datetime | None = None
    # Routes control approved for this node (Status.Self.AllowedIPs / PrimaryRoutes); None = the
    # status did not say (older helpers, no netmap yet): approval state unknown.
    allowed_ips: tuple[str, ...] | None = None
    primary_routes: tuple[str, ...] | None = None


# Advertising both default routes is what "run as exit node" means (tsaddr.ContainsExitRoutes).
EXIT_ROUTES = ("0.0.0.0/0", "::/0")


class Approval(enum.Enum):
    """Whether control approved the exit routes this device advertises."""

    APPROVED = "approved"
    PENDING = "pending"  # the status shows this node's routes, without both default routes
    UNKNOWN = "unknown"  # the status carries no AllowedIPs/PrimaryRoutes for this node


@dataclass(frozen=True, slots=True)
class ViewState:
    """Everything the widgets render; produced only by `reduce`."""

    helper_running: bool = False
    backend_state: str = "NoState"
    read_only: bool = False
    error: str = ""
    want_running: bool = False
    logged_out: bool = False
    control_url: str = ""
    exit_node_id: str = ""
    allow_lan: bool = False
    corp_dns: bool = True  # Prefs.CorpDNS: use the tailnet's DNS settings (ipn.NewPrefs default: on)
    route_all: bool = False  # Prefs.RouteAll: accept subnet routes other nodes offer
    shields_up: bool = False  # Prefs.ShieldsUp: refuse all incoming connections
    advertise_routes: tuple[str, ...] = ()  # Prefs.AdvertiseRoutes (exit routes included)
    self_node: SelfView = field(default_factory=SelfView)
    peers: tuple[PeerView, ...] = ()
    account: str = ""  # LoginName of the self node's user
    account_display: str = ""
    tailnet: str = ""
    health: tuple[str, ...] = ()
    login_pending: bool = False  # user clicked Log in; waiting for browser login
    browse_url: str = ""
    key_expired: bool = False
    key_expiring_soon: bool = False
    version: str = ""

    @property
    def tray(self) -> TrayState:
        return tray_state(self)

    @property
    def exit_options(self) -> tuple[PeerView, ...]:
        return tuple(p for p in self.peers if p.exit_node_option or p.id == self.exit_node_id and p.id)

    @property
    def exit_node(self) -> PeerView | None:
        if not self.exit_node_id:
            return None
        return next((p for p in self.peers if p.id == self.exit_node_id), None)

    @property
    def exit_node_offline(self) -> bool:
        node = self.exit_node
        return bool(self.exit_node_id) and (node is None or not node.online)

    @property
    def allow_incoming(self) -> bool:
        return not self.shields_up

    @property
    def advertises_exit_node(self) -> bool:
        return all(r in self.advertise_routes for r in EXIT_ROUTES)

    @property
    def exit_node_approval(self) -> Approval:
        """Approval of our exit routes as the self node's AllowedIPs/PrimaryRoutes show it."""
        me = self.self_node
        if me.allowed_ips is None and me.primary_routes is None:
            return Approval.UNKNOWN
        granted = set(me.allowed_ips or ()) | set(me.primary_routes or ())
        return Approval.APPROVED if all(r in granted for r in EXIT_ROUTES) else Approval.PENDING

    @property
    def control_unreachable(self) -> bool:
        return any("coordination server" in h.lower() or "unable to connect to" in h.lower() for h in self.health)


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """One ipn.Notify JSON object from the watch-ipn-bus stream."""

    notify: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A GET /localapi/v0/status answer (ipnstate.Status)."""

    status: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PrefsEvent:
    """A GET/PATCH /localapi/v0/prefs answer (ipn.Prefs)."""

    prefs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PingEvent:
    """A POST /localapi/v0/ping answer (ipnstate.PingResult) for `ip`."""

    ip: str
    result: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HelperDown:
    """The LocalAPI socket could not be reached (or the watch stream broke)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class HelperUp:
    """The LocalAPI answered again."""


@dataclass(frozen=True, slots=True)
class AccessDenied:
    """The LocalAPI answered 403 to a write: this user may only look."""

    message: str = ""


@dataclass(frozen=True, slots=True)
class LoginStarted:
    """The user asked to log in; a BrowseToURL is expected."""


@dataclass(frozen=True, slots=True)
class LoginCancelled:
    """The user cancelled the browser login."""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An error to display (LocalAPI error body, ErrMessage)."""

    message: str


Event = (
    NotifyEvent | StatusEvent | PrefsEvent | PingEvent | HelperDown | HelperUp | AccessDenied
    | LoginStarted | LoginCancelled | ErrorEvent
)


# ---------------------------------------------------------------- reducer


def reduce(state: ViewState, event: Event, now: dt.datetime) -> ViewState:
    """Return the ViewState after `event`; pure and total (malformed input changes nothing)."""
    if isinstance(event, NotifyEvent):
        return _apply_expiry(_reduce_notify(state, event.notify), now)
    if isinstance(event, StatusEvent):
        return _apply_expiry(_reduce_status(state, event.status), now)
    if isinstance(event, PrefsEvent):
        return _reduce_prefs(state, event.prefs)
    if isinstance(event, PingEvent):
        return _reduce_ping(state, event.ip, event.result)
    if isinstance(event, HelperDown):
        return dataclasses.replace(
            ViewState(), helper_running=False, error=event.reason, read_only=state.read_only
        )
    if isinstance(event, HelperUp):
        return dataclasses.replace(state, helper_running=True, error="")
    if isinstance(event, AccessDenied):
        return dataclasses.replace(state, read_only=True, login_pending=False)
    if isinstance(event, LoginStarted):
        return dataclasses.replace(state, login_pending=True, browse_url="", error="")
    if isinstance(event, LoginCancelled):
        return dataclasses.replace(state, login_pending=False, browse_url="")
    if isinstance(event, ErrorEvent):
        return dataclasses.replace(state, error=event.message)
    return state


def tray_state(s: ViewState) -> TrayState:
    """Derive the top-level tray state; never CONNECTED while the key is expired (USER-JOURNEYS)."""
    if not s.helper_running:
        return TrayState.HELPER_DOWN
    b = s.backend_state
    if b == "InUseOtherUser":
        return TrayState.ERROR
    if b == "NeedsLogin" or s.key_expired:
        return TrayState.NEEDS_LOGIN
    if b == "NeedsMachineAuth":
        return TrayState.NEEDS_APPROVAL
    if b == "Stopped":
        return TrayState.STOPPED
    if b == "Running":
        return TrayState.EXIT_NODE if s.exit_node_id else TrayState.CONNECTED
    return TrayState.CONNECTING


def _reduce_notify(state: ViewState, n: Mapping[str, Any]) -> ViewState:
    if not isinstance(n, Mapping):
        return state
    changes: dict[str, Any] = {"helper_running": True}
    if isinstance(n.get("Version"), str) and n["Version"]:
        changes["version"] = n["Version"]
    st = n.get("State")
    if isinstance(st, int) and not isinstance(st, bool) and 0 <= st < len(IPN_STATES):
        changes["backend_state"] = IPN_STATES[st]
        if IPN_STATES[st] in ("Running", "Starting", "Stopped", "NeedsMachineAuth"):
            changes["login_pending"] = False
            changes["browse_url"] = ""
    elif isinstance(st, str) and st in IPN_STATES:
        changes["backend_state"] = st
    url = n.get("BrowseToURL")
    if isinstance(url, str) and url and state.login_pending:
        changes["browse_url"] = url
    if n.get("LoginFinished") is not None:
        changes["login_pending"] = False
        changes["browse_url"] = ""
    err = n.get("ErrMessage")
    if isinstance(err, str) and err:
        changes["error"] = err
    state = dataclasses.replace(state, **changes)
    prefs = n.get("Prefs")
    if isinstance(prefs, Mapping):
        state = _reduce_prefs(state, prefs)
    return state


def _reduce_prefs(state: ViewState, p: Mapping[str, Any]) -> ViewState:
    if not isinstance(p, Mapping):
        return state
    changes: dict[str, Any] = {}
    for key, attr in (("WantRunning", "want_running"), ("LoggedOut", "logged_out"),
                      ("ExitNodeAllowLANAccess", "allow_lan"), ("CorpDNS", "corp_dns"),
                      ("RouteAll", "route_all"), ("ShieldsUp", "shields_up")):
        if isinstance(p.get(key), bool):
            changes[attr] = p[key]
    for key, attr in (("ControlURL", "control_url"), ("ExitNodeID", "exit_node_id")):
        if isinstance(p.get(key), str):
            changes[attr] = p[key]
    if "AdvertiseRoutes" in p and (p["AdvertiseRoutes"] is None or isinstance(p["AdvertiseRoutes"], (list, tuple))):
        changes["advertise_routes"] = _str_tuple(p["AdvertiseRoutes"])  # JSON null = none advertised
    return dataclasses.replace(state, **changes)


def _reduce_status(state: ViewState, s: Mapping[str, Any]) -> ViewState:
    if not isinstance(s, Mapping):
        return state
    changes: dict[str, Any] = {"helper_running": True}
    if isinstance(s.get("BackendState"), str) and s["BackendState"] in IPN_STATES:
        changes["backend_state"] = s["BackendState"]
        if s["BackendState"] in ("Running", "Starting", "Stopped", "NeedsMachineAuth"):
            changes["login_pending"] = False
            changes["browse_url"] = ""
    if isinstance(s.get("Version"), str):
        changes["version"] = s["Version"]
    changes["health"] = tuple(h for h in (s.get("Health") or ()) if isinstance(h, str))
    users = s.get("User") if isinstance(s.get("User"), Mapping) else {}
    self_raw = s.get("Self") if isinstance(s.get("Self"), Mapping) else {}
    ips = _str_tuple(s.get("TailscaleIPs")) or _str_tuple(self_raw.get("TailscaleIPs"))
    changes["self_node"] = SelfView(
        name=_host_name(self_raw),
        dns_name=_str(self_raw.get("DNSName")).rstrip("."),
        ips=_sort_ips(ips),
        key_expiry=_parse_time(self_raw.get("KeyExpiry")),
        allowed_ips=_str_tuple(self_raw["AllowedIPs"]) if isinstance(self_raw.get("AllowedIPs"), list) else None,
        primary_routes=(_str_tuple(self_raw["PrimaryRoutes"]) if isinstance(self_raw.get("PrimaryRoutes"), list)
                        else None),
    )
    user = users.get(str(self_raw.get("UserID"))) if self_raw.get("UserID") else None
    if isinstance(user, Mapping):
        changes["account"] = _str(user.get("LoginName"))
        changes["account_display"] = _str(user.get("DisplayName"))
    else:
        changes["account"] = changes["account_display"] = ""
    tailnet = s.get("CurrentTailnet")
    changes["tailnet"] = _str(tailnet.get("Name")) if isinstance(tailnet, Mapping) else ""
    old_latency = {p.key: (p.latency_ms, p.path, p.path_detail) for p in state.peers}
    peers = []
    raw_peers = s.get("Peer")
    if isinstance(raw_peers, Mapping):
        for key, raw in raw_peers.items():
            if not isinstance(raw, Mapping) or raw.get("ShareeNode"):
                continue
            peers.append(_peer_view(str(key), raw, users, old_latency.get(str(key))))
    changes["peers"] = tuple(sorted(peers, key=peer_sort_key))
    ens = s.get("ExitNodeStatus")
    if isinstance(ens, Mapping) and isinstance(ens.get("ID"), str):
        changes["exit_node_id"] = ens["ID"]
    return dataclasses.replace(state, **changes)


def _peer_view(key: str, raw: Mapping[str, Any], users: Mapping[str, Any],
               old: tuple[float | None, PathKind, str] | None) -> PeerView:
    cur = _str(raw.get("CurAddr"))
    relay = _str(raw.get("Relay"))
    peer_relay = _str(raw.get("PeerRelay"))
    online = raw.get("Online") is True
    if cur:
        path, detail = PathKind.DIRECT, cur
    elif peer_relay:
        path, detail = PathKind.PEER_RELAY, peer_relay
    elif relay and online:
        path, detail = PathKind.DERP, relay
    else:
        path, detail = PathKind.UNKNOWN, ""
    latency = None
    if old is not None:
        latency = old[0]
        # A ping told us the path more precisely than Status (which only knows the home DERP).
        if path in (PathKind.UNKNOWN, PathKind.DERP) and old[1] is not PathKind.UNKNOWN and online:
            path, detail = old[1], old[2]
    user = users.get(str(raw.get("UserID"))) if raw.get("UserID") else None
    return PeerView(
        key=key,
        id=_str(raw.get("ID")),
        name=_host_name(raw),
        dns_name=_str(raw.get("DNSName")).rstrip("."),
        os=_str(raw.get("OS")),
        ips=_sort_ips(_str_tuple(raw.get("TailscaleIPs"))),
        online=online,
        path=path,
        path_detail=detail,
        latency_ms=latency if online else None,
        last_handshake=_parse_time(raw.get("LastHandshake")),
        rx_bytes=_int(raw.get("RxBytes")),
        tx_bytes=_int(raw.get("TxBytes")),
        exit_node=raw.get("ExitNode") is True,
        exit_node_option=raw.get("ExitNodeOption") is True,
        expired=raw.get("Expired") is True,
        user=_str(user.get("LoginName")) if isinstance(user, Mapping) else "",
    )


def _reduce_ping(state: ViewState, ip: str, r: Mapping[str, Any]) -> ViewState:
    if not isinstance(r, Mapping):
        return state
    idx = next((i for i, p in enumerate(state.peers) if ip in p.ips), None)
    if idx is None:
        return state
    peer = state.peers[idx]
    if _str(r.get("Err")):
        new = dataclasses.replace(peer, latency_ms=None)
    else:
        lat = r.get("LatencySeconds")
        latency = float(lat) * 1000.0 if isinstance(lat, (int, float)) and not isinstance(lat, bool) else None
        if _str(r.get("Endpoint")):
            path, detail = PathKind.DIRECT, _str(r.get("Endpoint"))
        elif _str(r.get("PeerRelay")):
            path, detail = PathKind.PEER_RELAY, _str(r.get("PeerRelay"))
        elif _str(r.get("DERPRegionCode")):
            path, detail = PathKind.DERP, _str(r.get("DERPRegionCode"))
        else:
            path, detail = peer.path, peer.path_detail
        new = dataclasses.replace(peer, latency_ms=latency, path=path, path_detail=detail)
    peers = state.peers[:idx] + (new,) + state.peers[idx + 1:]
    return dataclasses.replace(state, peers=peers)


def _apply_expiry(state: ViewState, now: dt.datetime) -> ViewState:
    exp = state.self_node.key_expiry
    expired = exp is not None and exp <= now
    soon = exp is not None and not expired and exp - now <= KEY_EXPIRY_WARNING
    if expired == state.key_expired and soon == state.key_expiring_soon:
        return state
    return dataclasses.replace(state, key_expired=expired, key_expiring_soon=soon)


def peer_sort_key(p: PeerView) -> tuple[bool, str, str]:
    """Online first, then by name (USER-JOURNEYS: "online first")."""
    return (not p.online, p.name.lower(), p.key)


# ---------------------------------------------------------------- JSON helpers


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _str_tuple(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        return ()
    return tuple(x for x in v if isinstance(x, str))


def _sort_ips(ips: tuple[str, ...]) -> tuple[str, ...]:
    """IPv4 first, then IPv6, original order otherwise."""
    return tuple(sorted(ips, key=lambda ip: ":" in ip))


def _host_name(raw: Mapping[str, Any]) -> str:
    dns = _str(raw.get("DNSName"))
    if dns:
        return dns.split(".", 1)[0]
    return _str(raw.get("HostName"))


def _parse_time(v: Any) -> dt.datetime | None:
    """Parse Go's RFC 3339 time; the zero time and junk give None."""
    if not isinstance(v, str) or not v:
        return None
    text = v.replace("Z", "+00:00")
    # Python < 3.11 fromisoformat can't take >6 fractional digits; Go sends up to 9.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.year <= _GO_ZERO_YEAR:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t
