"""Pure reducer from LocalAPI schema objects (Status, Notify, Prefs, PingResult) to the GUI's ViewState; no Qt, no I/O.

Flow (STYLE R18):

    watch-ipn-bus Notify ─┐
    /status snapshot ─────┼──► reduce(ViewState, event, now) ──► ViewState ──► models / tray / window
    /ping result ─────────┤
    bridge events ────────┘   (helper up/down, access denied, login started/cancelled, errors)

The wire is read once, by engine.localapi.schema: events carry its frozen dataclasses (leniently
decoded, `schema.Decoded`) and the FieldProblems found in them. A field that could not be read has
its schema default; where the view can keep what it showed before (backend state, version, each
pref, ping latency) the reducer keeps that instead; a message that is not a JSON object at all
changes nothing. Nothing here raises on odd input.
`now` is an argument (aware UTC datetime) so key-expiry decisions are testable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.localapi import schema

# Warn about node-key expiry this long ahead (Tailscale's KeyExpirationNotice default is 24 h).
KEY_EXPIRY_WARNING = dt.timedelta(hours=24)

# Go's zero time.Time marshals as this; it means "never" / "unknown".
_GO_ZERO_YEAR = 1

# Backend states in which a browser login is over (or was never needed).
_LOGIN_OVER = frozenset(
    {schema.State.RUNNING, schema.State.STARTING, schema.State.STOPPED, schema.State.NEEDS_MACHINE_AUTH}
)


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


class Approval(enum.Enum):
    """Whether control approved the exit routes this device advertises."""

    APPROVED = "approved"
    PENDING = "pending"  # the status shows this node's routes, without both default routes
    UNKNOWN = "unknown"  # the status carries no AllowedIPs/PrimaryRoutes for this node


@dataclass(frozen=True, slots=True)
class ViewState:
    """Everything the widgets render; produced only by `reduce`."""

    helper_running: bool = False
    backend_state: schema.State = schema.State.NO_STATE
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
        return all(r in self.advertise_routes for r in schema.EXIT_ROUTES)

    @property
    def exit_node_approval(self) -> Approval:
        """Approval of our exit routes as the self node's AllowedIPs/PrimaryRoutes show it."""
        me = self.self_node
        if me.allowed_ips is None and me.primary_routes is None:
            return Approval.UNKNOWN
        granted = set(me.allowed_ips or ()) | set(me.primary_routes or ())
        return Approval.APPROVED if all(r in granted for r in schema.EXIT_ROUTES) else Approval.PENDING

    @property
    def control_unreachable(self) -> bool:
        return any("coordination server" in h.lower() or "unable to connect to" in h.lower() for h in self.health)


# ---------------------------------------------------------------- events

Problems = tuple[schema.FieldProblem, ...]


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """One ipn.Notify from the watch-ipn-bus stream (a field that is None was not in the message).

    Like every event with a schema object, it takes the object, a `schema.Decoded` (its problems are
    kept) or a JSON object (tests, benchmarks), which is decoded leniently here: keys the object
    lacks count as unreadable, so a partial object changes only what it has.
    """

    notify: schema.Notify
    problems: Problems = ()

    def __post_init__(self) -> None:
        _adopt(self, "notify", schema.Notify)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A GET /localapi/v0/status answer (ipnstate.Status)."""

    status: schema.Status
    problems: Problems = ()

    def __post_init__(self) -> None:
        _adopt(self, "status", schema.Status)


@dataclass(frozen=True, slots=True)
class PrefsEvent:
    """A GET/PATCH /localapi/v0/prefs answer (ipn.Prefs)."""

    prefs: schema.Prefs
    problems: Problems = ()

    def __post_init__(self) -> None:
        _adopt(self, "prefs", schema.Prefs)


@dataclass(frozen=True, slots=True)
class PingEvent:
    """A POST /localapi/v0/ping answer (ipnstate.PingResult) for `ip`."""

    ip: str
    result: schema.PingResult
    problems: Problems = ()

    def __post_init__(self) -> None:
        _adopt(self, "result", schema.PingResult)


def _adopt(event: Any, attr: str, cls: type[schema.Wire]) -> None:
    """Turn the `attr` given to an event into a `cls` object, adding its problems to the event's."""
    given = getattr(event, attr)
    if isinstance(given, cls):
        return
    if isinstance(given, schema.Decoded):
        value, problems = given.value, given.problems
    else:
        raw = dict(given) if isinstance(given, Mapping) else given
        decoded = schema.decode_lenient(cls, raw)
        absent = tuple(
            schema.FieldProblem((go,), "absent") for go in cls.go_to_attr() if isinstance(raw, dict) and go not in raw
        )
        value, problems = decoded.value, decoded.problems + absent
    object.__setattr__(event, attr, value)
    object.__setattr__(event, "problems", event.problems + problems)


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
    NotifyEvent
    | StatusEvent
    | PrefsEvent
    | PingEvent
    | HelperDown
    | HelperUp
    | AccessDenied
    | LoginStarted
    | LoginCancelled
    | ErrorEvent
)


# ---------------------------------------------------------------- reducer


def reduce(state: ViewState, event: Event, now: dt.datetime) -> ViewState:
    """Return the ViewState after `event`; pure and total (unreadable input changes nothing it need not)."""
    if isinstance(event, NotifyEvent):
        return _apply_expiry(_reduce_notify(state, event.notify, event.problems), now)
    if isinstance(event, StatusEvent):
        return _apply_expiry(_reduce_status(state, event.status, event.problems), now)
    if isinstance(event, PrefsEvent):
        return _reduce_prefs(state, event.prefs, _unreadable(event.problems))
    if isinstance(event, PingEvent):
        return _reduce_ping(state, event.ip, event.result, event.problems)
    if isinstance(event, HelperDown):
        return dataclasses.replace(ViewState(), helper_running=False, error=event.reason, read_only=state.read_only)
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
    if b is schema.State.IN_USE_OTHER_USER:
        return TrayState.ERROR
    if b is schema.State.NEEDS_LOGIN or s.key_expired:
        return TrayState.NEEDS_LOGIN
    if b is schema.State.NEEDS_MACHINE_AUTH:
        return TrayState.NEEDS_APPROVAL
    if b is schema.State.STOPPED:
        return TrayState.STOPPED
    if b is schema.State.RUNNING:
        return TrayState.EXIT_NODE if s.exit_node_id else TrayState.CONNECTED
    return TrayState.CONNECTING


def _unreadable(problems: Problems, *at: str) -> frozenset[str]:
    """Go names of the fields right below the object at path `at` that could not be read ("": that object itself)."""
    n = len(at)
    return frozenset(
        p.path[n] if len(p.path) > n else "" for p in problems if p.path[:n] == at and len(p.path) <= n + 1
    )


def _backend_state(state: schema.State) -> dict[str, Any]:
    changes: dict[str, Any] = {"backend_state": state}
    if state in _LOGIN_OVER:
        changes["login_pending"] = False
        changes["browse_url"] = ""
    return changes


def _reduce_notify(state: ViewState, n: schema.Notify, problems: Problems) -> ViewState:
    if "" in _unreadable(problems):
        return state
    changes: dict[str, Any] = {"helper_running": True}
    if n.version:
        changes["version"] = n.version
    if n.state is not None:
        changes.update(_backend_state(n.state))
    if n.browse_to_url and state.login_pending:
        changes["browse_url"] = n.browse_to_url
    if n.login_finished is not None:
        changes["login_pending"] = False
        changes["browse_url"] = ""
    if n.err_message:
        changes["error"] = n.err_message
    state = dataclasses.replace(state, **changes)
    if n.prefs is not None:
        state = _reduce_prefs(state, n.prefs, _unreadable(problems, "Prefs"))
    return state


# Prefs attribute -> ViewState attribute, for the prefs the GUI shows.
_PREFS_VIEW = {
    "want_running": "want_running",
    "logged_out": "logged_out",
    "exit_node_allow_lan_access": "allow_lan",
    "corp_dns": "corp_dns",
    "route_all": "route_all",
    "shields_up": "shields_up",
    "control_url": "control_url",
    "exit_node_id": "exit_node_id",
    "advertise_routes": "advertise_routes",
}


def _reduce_prefs(state: ViewState, p: schema.Prefs, unreadable: frozenset[str]) -> ViewState:
    """Each pref the GUI shows, except those that could not be read: the view keeps what it had for them."""
    if "" in unreadable:
        return state
    g2a = schema.Prefs.go_to_attr()
    skip = {g2a[go] for go in unreadable if go in g2a}
    changes = {view: getattr(p, attr) for attr, view in _PREFS_VIEW.items() if attr not in skip}
    if "advertise_routes" in changes:
        changes["advertise_routes"] = tuple(changes["advertise_routes"] or ())  # JSON null = none advertised
    return dataclasses.replace(state, **changes)


def _reduce_status(state: ViewState, s: schema.Status, problems: Problems) -> ViewState:
    unreadable = _unreadable(problems)
    if "" in unreadable:
        return state
    changes: dict[str, Any] = {"helper_running": True}
    backend = _known_state(s) if "BackendState" not in unreadable else None
    if backend is not None:
        changes.update(_backend_state(backend))
    if "Version" not in unreadable:
        changes["version"] = s.version
    changes["health"] = tuple(s.health or ())
    users = s.user or {}
    me = s.self or schema.PeerStatus()
    changes["self_node"] = SelfView(
        name=_host_name(me),
        dns_name=me.dns_name.rstrip("."),
        ips=_sort_ips(tuple(s.tailscale_ips or me.tailscale_ips or ())),
        key_expiry=_parse_time(me.key_expiry),
        allowed_ips=tuple(me.allowed_ips) if me.allowed_ips is not None else None,
        primary_routes=tuple(me.primary_routes) if me.primary_routes is not None else None,
    )
    user = _user(users, me)
    changes["account"] = user.login_name if user else ""
    changes["account_display"] = user.display_name if user else ""
    changes["tailnet"] = s.current_tailnet.name if s.current_tailnet is not None else ""
    old_latency = {p.key: (p.latency_ms, p.path, p.path_detail) for p in state.peers}
    peers = [_peer_view(key, p, users, old_latency.get(key)) for key, p in (s.peer or {}).items() if not p.sharee_node]
    changes["peers"] = tuple(sorted(peers, key=peer_sort_key))
    if s.exit_node_status is not None and "ID" not in _unreadable(problems, "ExitNodeStatus"):
        changes["exit_node_id"] = s.exit_node_status.id
    return dataclasses.replace(state, **changes)


def _known_state(s: schema.Status) -> schema.State | None:
    try:
        return s.state
    except schema.SchemaError:  # a BackendState name we do not know
        return None


def _user(users: Mapping[str, schema.UserProfile], node: schema.PeerStatus) -> schema.UserProfile | None:
    return users.get(str(node.user_id)) if node.user_id else None


def _peer_view(
    key: str,
    p: schema.PeerStatus,
    users: Mapping[str, schema.UserProfile],
    old: tuple[float | None, PathKind, str] | None,
) -> PeerView:
    online = p.online
    if p.cur_addr:
        path, detail = PathKind.DIRECT, p.cur_addr
    elif p.peer_relay:
        path, detail = PathKind.PEER_RELAY, p.peer_relay
    elif p.relay and online:
        path, detail = PathKind.DERP, p.relay
    else:
        path, detail = PathKind.UNKNOWN, ""
    latency = None
    if old is not None:
        latency = old[0]
        # A ping told us the path more precisely than Status (which only knows the home DERP).
        if path in (PathKind.UNKNOWN, PathKind.DERP) and old[1] is not PathKind.UNKNOWN and online:
            path, detail = old[1], old[2]
    user = _user(users, p)
    return PeerView(
        key=key,
        id=p.id,
        name=_host_name(p),
        dns_name=p.dns_name.rstrip("."),
        os=p.os,
        ips=_sort_ips(tuple(p.tailscale_ips or ())),
        online=online,
        path=path,
        path_detail=detail,
        latency_ms=latency if online else None,
        last_handshake=_parse_time(p.last_handshake),
        rx_bytes=p.rx_bytes,
        tx_bytes=p.tx_bytes,
        exit_node=p.exit_node,
        exit_node_option=p.exit_node_option,
        expired=p.expired,
        user=user.login_name if user else "",
    )


def _reduce_ping(state: ViewState, ip: str, r: schema.PingResult, problems: Problems) -> ViewState:
    unreadable = _unreadable(problems)
    if "" in unreadable:
        return state
    idx = next((i for i, p in enumerate(state.peers) if ip in p.ips), None)
    if idx is None:
        return state
    peer = state.peers[idx]
    if r.err:
        new = dataclasses.replace(peer, latency_ms=None)
    else:
        latency = r.latency_seconds * 1000.0 if "LatencySeconds" not in unreadable else None
        if r.endpoint:
            path, detail = PathKind.DIRECT, r.endpoint
        elif r.peer_relay:
            path, detail = PathKind.PEER_RELAY, r.peer_relay
        elif r.derp_region_code:
            path, detail = PathKind.DERP, r.derp_region_code
        else:
            path, detail = peer.path, peer.path_detail
        new = dataclasses.replace(peer, latency_ms=latency, path=path, path_detail=detail)
    peers = state.peers[:idx] + (new,) + state.peers[idx + 1 :]
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


# ---------------------------------------------------------------- helpers


def _sort_ips(ips: tuple[str, ...]) -> tuple[str, ...]:
    """IPv4 first, then IPv6, original order otherwise."""
    return tuple(sorted(ips, key=lambda ip: ":" in ip))


def _host_name(node: schema.PeerStatus) -> str:
    if node.dns_name:
        return node.dns_name.split(".", 1)[0]
    return node.host_name


def _parse_time(v: str | None) -> dt.datetime | None:
    """Parse Go's RFC 3339 time; the zero time and junk give None."""
    if not v:
        return None
    text = v.replace("Z", "+00:00")
    # Python < 3.11 fromisoformat can't take >6 fractional digits; Go sends up to 9.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
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
