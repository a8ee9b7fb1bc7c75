"""LocalAPI wire types in tailscaled's JSON shapes (ipnstate.Status, ipn.Prefs/MaskedPrefs, ipn.Notify, ...).

Every struct is a frozen dataclass whose fields carry their Go JSON name (`gofield("TailscaleIPs")`),
so `to_json()` emits exactly the keys tailscaled 1.90 emits and `from_json()` reads what a real
tailscaled (or our helper) sends. Keys the schema does not know are kept in `extra` and written
back unchanged, so a round trip through an older/newer peer loses nothing.

Decoding is strict (SchemaError on any value of the wrong shape: what the server wants for requests),
except inside `lenient_decoding()` or through `decode_lenient()` (what a client such as the GUI wants
for answers): there a field of the wrong shape gets its default, a bad list/map element is dropped,
each is reported as a FieldProblem, and the rest of the message is used.

Wire conventions (Go encoding/json, as tailscaled uses them):
- nil slices/maps are `null`; zero `time.Time` is "0001-01-01T00:00:00Z"; a zero key is its
  prefix followed by 64 zeros; a zero netip.Addr is "".
- `omitempty` fields are left out when empty (`gofield(..., omitempty=True)`).
- Times, keys and addresses stay in their text forms here (this module is shared with the GUI,
  which must not import engine internals).
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import enum
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Iterator, TypeVar

from engine.net.tsaddr import EXIT_ROUTES  # noqa: F401 - re-exported: the GUI reads the pair from the schema

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
ZERO_NODEKEY = "nodekey:" + "0" * 64
DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"
# The server address tailscale's client library puts in every LocalAPI request (apitype.LocalAPIHost).
LOCALAPI_HOST = "local-tailscaled.sock"
# tailcfg.CurrentCapabilityVersion of tailscale 1.90.9, sent as Tailscale-Cap.
CAPABILITY_VERSION = 130
# Our IPN version string: the tailscale release whose LocalAPI we follow, then our own tag.
IPN_VERSION = "1.90.9-meshvpn"

W = TypeVar("W", bound="Wire")


class SchemaError(ValueError):
    """A JSON document does not have the shape of the wire type it is decoded as.

    `reason`: what is wrong, without the "Type.Field: " prefix of the message.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def _bad(where: str, reason: str) -> SchemaError:
    return SchemaError(f"{where}: {reason}", reason)


@dataclass(frozen=True)
class FieldProblem:
    """A value a lenient decode could not use: its field got its default (a bad list/map element was dropped).

    `path`: the Go names (and map keys, list indexes) from the decoded message down to the value;
    () is the message itself (not a JSON object: the whole message got its defaults).
    """

    path: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return f"{'.'.join(self.path) or '(message)'}: {self.reason}"


@dataclass(frozen=True)
class Decoded(Generic[W]):
    """A message decoded leniently: `value` (unusable fields at their defaults) and what was wrong in it."""

    value: W
    problems: tuple[FieldProblem, ...] = ()


# The problems list of the innermost lenient_decoding() block of this task (None: decoding is strict).
_LENIENT: contextvars.ContextVar[list[FieldProblem] | None] = contextvars.ContextVar("schema_lenient", default=None)


@contextlib.contextmanager
def lenient_decoding() -> Iterator[list[FieldProblem]]:
    """Within this block (this task and the tasks it starts), Wire.from_dict/from_json decode leniently.

    Yields the list every FieldProblem is appended to. Only text that is not JSON at all still
    raises SchemaError. For clients (engine.localapi.client decodes its answers with from_dict).
    """
    problems: list[FieldProblem] = []
    token = _LENIENT.set(problems)
    try:
        yield problems
    finally:
        _LENIENT.reset(token)


def decode_lenient(cls: type[W], data: Any) -> Decoded[W]:
    """`cls.from_dict(data)` that never raises: odd fields get their defaults and are listed in `problems`."""
    with lenient_decoding() as problems:
        value = cls.from_dict(data)
    return Decoded(value, tuple(problems))


def gofield(
    name: str, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, omitempty: bool = False
) -> Any:
    """A dataclass field serialized under the Go JSON name `name`."""
    md = {"go": name, "omitempty": omitempty}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def extra_field() -> Any:
    """Unknown JSON keys seen while decoding; written back on encode; ignored by ==."""
    return field(default_factory=dict, compare=False, repr=False, metadata={"extra": True})


def _is_empty(v: Any) -> bool:
    if v is None or v is False or v == 0 or v == "":
        return True
    if isinstance(v, (list, dict, tuple)) and not v:
        return True
    return False


class Wire:
    """Mixin for wire dataclasses: JSON encode/decode by Go field names."""

    _fields_cache: ClassVar[dict[type, list[tuple[str, str, bool, Any]]]] = {}

    @classmethod
    def _wire_fields(cls) -> list[tuple[str, str, bool, Any]]:
        cached = Wire._fields_cache.get(cls)
        if cached is None:
            hints = typing.get_type_hints(cls)
            cached = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if f.metadata.get("extra"):
                    continue
                go = f.metadata.get("go")
                if go is None:
                    continue
                cached.append((f.name, go, bool(f.metadata.get("omitempty")), hints[f.name]))
            Wire._fields_cache[cls] = cached
        return cached

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, go, omitempty, _tp in self._wire_fields():
            v = getattr(self, attr)
            if omitempty and _is_empty(v):
                continue
            out[go] = _encode(v)
        extra = getattr(self, "extra", None)
        if extra:
            for k, v in extra.items():
                out.setdefault(k, v)
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def go_to_attr(cls) -> dict[str, str]:
        """Go field name -> Python attribute name."""
        return {go: attr for attr, go, _o, _t in cls._wire_fields()}

    @classmethod
    def from_dict(cls: type[W], d: Any) -> W:
        """Decode a JSON object: strictly, or leniently inside lenient_decoding()."""
        problems = _LENIENT.get()
        if problems is None:
            return cls._decode_object(d, None, ())
        ok, value = _decode_at(cls, d, cls.__name__, problems, ())
        return value if ok else cls()

    @classmethod
    def _decode_object(cls: type[W], d: Any, problems: list[FieldProblem] | None, path: tuple[str, ...]) -> W:
        if not isinstance(d, dict):
            raise _bad(cls.__name__, f"want a JSON object, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        known = set()
        for attr, go, _omit, tp in cls._wire_fields():
            known.add(go)
            if go in d:
                ok, value = _decode_at(tp, d[go], f"{cls.__name__}.{go}", problems, path + (go,))
                if ok:
                    kwargs[attr] = value
        extra = {k: v for k, v in d.items() if k not in known}
        if any(f.metadata.get("extra") for f in dataclasses.fields(cls)):  # type: ignore[arg-type]
            kwargs["extra"] = extra
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[W], text: str | bytes) -> W:
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: JSON nested too deep
            raise SchemaError(f"{cls.__name__}: invalid JSON: {e}") from e
        return cls.from_dict(d)


def _encode(v: Any) -> Any:
    if isinstance(v, Wire):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    return v


def _decode_at(
    tp: Any, v: Any, where: str, problems: list[FieldProblem] | None, path: tuple[str, ...]
) -> tuple[bool, Any]:
    """(True, value); strict (`problems` None): raises SchemaError; lenient: (False, None) once the problem is noted."""
    if problems is None:
        return True, _decode(tp, v, where)
    try:
        return True, _decode(tp, v, where, problems, path)
    except SchemaError as e:
        problems.append(FieldProblem(path, e.reason))
        return False, None


def _decode(tp: Any, v: Any, where: str, problems: list[FieldProblem] | None = None, path: tuple[str, ...] = ()) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if v is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], v, where, problems, path)
    if tp is Any:
        return v
    if origin in (list, tuple):
        if v is None:
            return None
        if not isinstance(v, list):
            raise _bad(where, f"want a list, got {type(v).__name__}")
        items = []
        for i, x in enumerate(v):
            ok, value = _decode_at(args[0], x, where, problems, path + (str(i),))
            if ok:
                items.append(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise _bad(where, f"want an object, got {type(v).__name__}")
        out = {}
        for k, x in v.items():
            ok, value = _decode_at(args[1], x, where, problems, path + (str(k),))
            if ok:
                out[str(k)] = value
        return out
    if isinstance(tp, type) and issubclass(tp, Wire):
        return tp._decode_object(v, problems, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if problems is not None and isinstance(v, str) and hasattr(tp, "from_go_name"):
            with contextlib.suppress(SchemaError):
                return tp.from_go_name(v)  # leniently, a State may come by its name ("Running")
        if isinstance(v, bool) or (issubclass(tp, int) and not isinstance(v, int)):  # True, 2.0: not Go ints
            raise _bad(where, f"want an integer, got {type(v).__name__}")
        try:
            return tp(v)
        except ValueError as e:
            raise _bad(where, str(e)) from e
    if tp is bool:
        if not isinstance(v, bool):
            raise _bad(where, f"want a bool, got {type(v).__name__}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(where, f"want an integer, got {type(v).__name__}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(where, f"want a number, got {type(v).__name__}")
        return float(v)
    if tp is str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise _bad(where, f"want a string, got {type(v).__name__}")
        return v
    return v


# --------------------------------------------------------------------------------------------
# ipn.State


class State(enum.IntEnum):
    """ipn.State: the backend's state, with tailscaled's numbering (it is sent as a number)."""

    NO_STATE = 0
    IN_USE_OTHER_USER = 1
    NEEDS_LOGIN = 2
    NEEDS_MACHINE_AUTH = 3
    STOPPED = 4
    STARTING = 5
    RUNNING = 6

    @property
    def go_name(self) -> str:
        """The string form used in Status.BackendState ("NeedsLogin", ...)."""
        return _STATE_NAMES[self]

    @classmethod
    def from_go_name(cls, name: str) -> "State":
        for s, n in _STATE_NAMES.items():
            if n == name:
                return s
        raise SchemaError(f"unknown backend state {name!r}")


_STATE_NAMES = {
    State.NO_STATE: "NoState",
    State.IN_USE_OTHER_USER: "InUseOtherUser",
    State.NEEDS_LOGIN: "NeedsLogin",
    State.NEEDS_MACHINE_AUTH: "NeedsMachineAuth",
    State.STOPPED: "Stopped",
    State.STARTING: "Starting",
    State.RUNNING: "Running",
}


# --------------------------------------------------------------------------------------------
# Prefs (ipn.Prefs) and MaskedPrefs


@dataclass(frozen=True)
class UserProfile(Wire):
    """tailcfg.UserProfile."""

    id: int = gofield("ID", 0)
    login_name: str = gofield("LoginName", "")
    display_name: str = gofield("DisplayName", "")
    profile_pic_url: str = gofield("ProfilePicURL", "", omitempty=True)
    extra: dict = extra_field()


@dataclass(frozen=True)
class Persist(Wire):
    """persist.Persist as the LocalAPI shows it (the `Config` key of Prefs); never carries private keys."""

    user_profile: UserProfile = gofield("UserProfile", factory=UserProfile)
    node_id: str = gofield("NodeID", "")
    extra: dict = extra_field()


@dataclass(frozen=True)
class AutoUpdatePrefs(Wire):
    check: bool = gofield("Check", True)
    apply: bool | None = gofield("Apply", None)  # opt.Bool: null = unset


@dataclass(frozen=True)
class AppConnectorPrefs(Wire):
    advertise: bool = gofield("Advertise", False)


NETFILTER_OFF, NETFILTER_NODIVERT, NETFILTER_ON = 0, 1, 2


@dataclass(frozen=True)
class Prefs(Wire):
    """ipn.Prefs; the defaults are ipn.NewPrefs() on Linux."""

    control_url: str = gofield("ControlURL", "")
    route_all: bool = gofield("RouteAll", False)
    exit_node_id: str = gofield("ExitNodeID", "")
    exit_node_ip: str = gofield("ExitNodeIP", "")
    auto_exit_node: str = gofield("AutoExitNode", "", omitempty=True)
    internal_exit_node_prior: str = gofield("InternalExitNodePrior", "")
    exit_node_allow_lan_access: bool = gofield("ExitNodeAllowLANAccess", False)
    corp_dns: bool = gofield("CorpDNS", True)
    run_ssh: bool = gofield("RunSSH", False)
    run_web_client: bool = gofield("RunWebClient", False)
    want_running: bool = gofield("WantRunning", False)
    logged_out: bool = gofield("LoggedOut", False)
    shields_up: bool = gofield("ShieldsUp", False)
    advertise_tags: list[str] | None = gofield("AdvertiseTags", None)
    hostname: str = gofield("Hostname", "")
    notepad_urls: bool = gofield("NotepadURLs", False)
    force_daemon: bool = gofield("ForceDaemon", False, omitempty=True)
    egg: bool = gofield("Egg", False, omitempty=True)
    advertise_routes: list[str] | None = gofield("AdvertiseRoutes", None)
    advertise_services: list[str] | None = gofield("AdvertiseServices", None)
    no_snat: bool = gofield("NoSNAT", False)
    no_stateful_filtering: bool | None = gofield("NoStatefulFiltering", True)
    netfilter_mode: int = gofield("NetfilterMode", NETFILTER_ON)
    operator_user: str = gofield("OperatorUser", "", omitempty=True)
    profile_name: str = gofield("ProfileName", "", omitempty=True)
    auto_update: AutoUpdatePrefs = gofield("AutoUpdate", factory=AutoUpdatePrefs)
    app_connector: AppConnectorPrefs = gofield("AppConnector", factory=AppConnectorPrefs)
    posture_checking: bool = gofield("PostureChecking", False)
    netfilter_kind: str = gofield("NetfilterKind", "")
    drive_shares: list[Any] | None = gofield("DriveShares", None)
    relay_server_port: int | None = gofield("RelayServerPort", None, omitempty=True)
    allow_single_hosts: bool = gofield("AllowSingleHosts", True)
    config: Persist | None = gofield("Config", None)
    extra: dict = extra_field()

    def exit_routes_advertised(self) -> bool:
        r = set(self.advertise_routes or ())
        return all(x in r for x in EXIT_ROUTES)


# The mask names a Prefs field by its Go name; nested masks (AutoUpdate) use "AutoUpdate.Check".
_NESTED_MASKS = {"AutoUpdateSet": {"CheckSet": "AutoUpdate.Check", "ApplySet": "AutoUpdate.Apply"}}
# Fields a LocalAPI client may not set (ipn.MaskedPrefs.SetsInternal).
INTERNAL_PREFS = frozenset({"InternalExitNodePrior"})


@dataclass(frozen=True)
class MaskedPrefs:
    """ipn.MaskedPrefs: a Prefs plus the set of fields (Go names) that an edit changes.

    Wire form: the Prefs keys flattened, plus `<Field>Set: true` for each changed field.
    """

    prefs: Prefs = field(default_factory=Prefs)
    set_fields: frozenset[str] = frozenset()

    @classmethod
    def of(cls, **changes: Any) -> "MaskedPrefs":
        """MaskedPrefs.of(want_running=True, exit_node_id="n123") — by Python attribute names."""
        attr_to_go = {attr: go for go, attr in Prefs.go_to_attr().items()}
        unknown = [a for a in changes if a not in attr_to_go]
        if unknown:
            raise SchemaError(f"MaskedPrefs: unknown prefs fields {unknown}")
        return cls(dataclasses.replace(Prefs(), **changes), frozenset(attr_to_go[a] for a in changes))

    def is_empty(self) -> bool:
        return not self.set_fields

    def apply_to(self, base: Prefs) -> Prefs:
        """The prefs `base` with this edit applied (ipn.Prefs.ApplyEdits)."""
        g2a = Prefs.go_to_attr()
        changes: dict[str, Any] = {}
        for name in sorted(self.set_fields):
            if "." in name:
                outer, inner = name.split(".", 1)
                attr = g2a[outer]
                cur = changes.get(attr, getattr(base, attr))
                sub_attr = {go: a for a, go, _o, _t in type(cur)._wire_fields()}[inner]
                changes[attr] = dataclasses.replace(cur, **{sub_attr: getattr(getattr(self.prefs, attr), sub_attr)})
            else:
                attr = g2a[name]
                changes[attr] = getattr(self.prefs, attr)
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = self.prefs.to_dict()
        for name in sorted(self.set_fields):
            if "." in name:
                outer, inner = name.split(".", 1)
                d.setdefault(outer + "Set", {})[inner + "Set"] = True
            else:
                d[name + "Set"] = True
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> "MaskedPrefs":
        if not isinstance(d, dict):
            raise SchemaError(f"MaskedPrefs: want a JSON object, got {type(d).__name__}")
        g2a = Prefs.go_to_attr()
        sets: set[str] = set()
        plain: dict[str, Any] = {}
        for k, v in d.items():
            if k in _NESTED_MASKS:
                if v is None:
                    continue
                if not isinstance(v, dict):
                    raise SchemaError(f"MaskedPrefs.{k}: want an object")
                for ik, iv in v.items():
                    if ik not in _NESTED_MASKS[k]:
                        raise SchemaError(f"MaskedPrefs.{k}.{ik}: unknown mask field")
                    if not isinstance(iv, bool):
                        raise SchemaError(f"MaskedPrefs.{k}.{ik}: want a bool")
                    if iv:
                        sets.add(_NESTED_MASKS[k][ik])
            elif k.endswith("Set") and k[:-3] in g2a:
                if not isinstance(v, bool):
                    raise SchemaError(f"MaskedPrefs.{k}: want a bool, got {type(v).__name__}")
                if v:
                    sets.add(k[:-3])
            elif k.endswith("Set") and k not in g2a:
                raise SchemaError(f"MaskedPrefs.{k}: unknown mask field")
            else:
                plain[k] = v
        return cls(Prefs.from_dict(plain), frozenset(sets))

    @classmethod
    def from_json(cls, text: str | bytes) -> "MaskedPrefs":
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: JSON nested too deep
            raise SchemaError(f"MaskedPrefs: invalid JSON: {e}") from e
        return cls.from_dict(d)


@dataclass(frozen=True)
class Options(Wire):
    """ipn.Options: the body of POST /localapi/v0/start."""

    frontend_log_id: str = gofield("FrontendLogID", "")
    update_prefs: Prefs | None = gofield("UpdatePrefs", None)
    auth_key: str = gofield("AuthKey", "")
    extra: dict = extra_field()

    def __repr__(self) -> str:  # never print the auth key
        return f"Options(update_prefs={self.update_prefs!r}, auth_key={'<set>' if self.auth_key else ''!r})"


# --------------------------------------------------------------------------------------------
# Status (ipnstate.Status)


@dataclass(frozen=True)
class Location(Wire):
    country: str = gofield("Country", "", omitempty=True)
    country_code: str = gofield("CountryCode", "", omitempty=True)
    city: str = gofield("City", "", omitempty=True)
    city_code: str = gofield("CityCode", "", omitempty=True)
    latitude: float = gofield("Latitude", 0.0, omitempty=True)
    longitude: float = gofield("Longitude", 0.0, omitempty=True)
    priority: int = gofield("Priority", 0, omitempty=True)


@dataclass(frozen=True)
class PeerStatus(Wire):
    """ipnstate.PeerStatus: one node (self or a peer) as `tailscale status` shows it."""

    id: str = gofield("ID", "")
    public_key: str = gofield("PublicKey", ZERO_NODEKEY)
    host_name: str = gofield("HostName", "")
    dns_name: str = gofield("DNSName", "")
    os: str = gofield("OS", "")
    user_id: int = gofield("UserID", 0)
    alt_sharer_user_id: int = gofield("AltSharerUserID", 0, omitempty=True)
    tailscale_ips: list[str] | None = gofield("TailscaleIPs", None)
    allowed_ips: list[str] | None = gofield("AllowedIPs", None, omitempty=True)
    tags: list[str] | None = gofield("Tags", None, omitempty=True)
    primary_routes: list[str] | None = gofield("PrimaryRoutes", None, omitempty=True)
    addrs: list[str] | None = gofield("Addrs", None)
    cur_addr: str = gofield("CurAddr", "")
    relay: str = gofield("Relay", "")
    peer_relay: str = gofield("PeerRelay", "")
    rx_bytes: int = gofield("RxBytes", 0)
    tx_bytes: int = gofield("TxBytes", 0)
    created: str = gofield("Created", GO_ZERO_TIME)
    last_write: str = gofield("LastWrite", GO_ZERO_TIME)
    last_seen: str = gofield("LastSeen", GO_ZERO_TIME)
    last_handshake: str = gofield("LastHandshake", GO_ZERO_TIME)
    online: bool = gofield("Online", False)
    exit_node: bool = gofield("ExitNode", False)
    exit_node_option: bool = gofield("ExitNodeOption", False)
    active: bool = gofield("Active", False)
    peer_api_url: list[str] | None = gofield("PeerAPIURL", None)
    taildrop_target: int = gofield("TaildropTarget", 0)
    no_file_sharing_reason: str = gofield("NoFileSharingReason", "")
    capabilities: list[str] | None = gofield("Capabilities", None, omitempty=True)
    cap_map: dict[str, Any] | None = gofield("CapMap", None, omitempty=True)
    ssh_host_keys: list[str] | None = gofield("sshHostKeys", None, omitempty=True)
    sharee_node: bool = gofield("ShareeNode", False, omitempty=True)
    in_network_map: bool = gofield("InNetworkMap", False)
    in_magic_sock: bool = gofield("InMagicSock", False)
    in_engine: bool = gofield("InEngine", False)
    expired: bool = gofield("Expired", False, omitempty=True)
    key_expiry: str | None = gofield("KeyExpiry", None, omitempty=True)
    location: Location | None = gofield("Location", None, omitempty=True)
    extra: dict = extra_field()

    def first_ip(self) -> str:
        return self.tailscale_ips[0] if self.tailscale_ips else ""


@dataclass(frozen=True)
class TailnetStatus(Wire):
    name: str = gofield("Name", "")
    magic_dns_suffix: str = gofield("MagicDNSSuffix", "")
    magic_dns_enabled: bool = gofield("MagicDNSEnabled", False)


@dataclass(frozen=True)
class ExitNodeStatus(Wire):
    id: str = gofield("ID", "")
    online: bool = gofield("Online", False)
    tailscale_ips: list[str] | None = gofield("TailscaleIPs", None)


@dataclass(frozen=True)
class Status(Wire):
    """ipnstate.Status: GET /localapi/v0/status. `peer` is keyed by "nodekey:<hex>"; `user` by the decimal UserID."""

    version: str = gofield("Version", "")
    tun: bool = gofield("TUN", False)
    backend_state: str = gofield("BackendState", "NoState")
    have_node_key: bool = gofield("HaveNodeKey", False, omitempty=True)
    auth_url: str = gofield("AuthURL", "")
    tailscale_ips: list[str] | None = gofield("TailscaleIPs", None)
    self: PeerStatus | None = gofield("Self", None)
    exit_node_status: ExitNodeStatus | None = gofield("ExitNodeStatus", None, omitempty=True)
    health: list[str] | None = gofield("Health", None)
    magic_dns_suffix: str = gofield("MagicDNSSuffix", "")
    current_tailnet: TailnetStatus | None = gofield("CurrentTailnet", None)
    cert_domains: list[str] | None = gofield("CertDomains", None)
    peer: dict[str, PeerStatus] | None = gofield("Peer", None)
    user: dict[str, UserProfile] | None = gofield("User", None)
    client_version: dict[str, Any] | None = gofield("ClientVersion", None)
    extra: dict = extra_field()

    @property
    def state(self) -> State:
        return State.from_go_name(self.backend_state)

    def peers(self) -> list[PeerStatus]:
        """Peers sorted like ipnstate.SortPeers (DNS name, then hostname, then IP)."""
        ps = list((self.peer or {}).values())
        ps.sort(key=lambda p: (p.dns_name, p.host_name, p.first_ip()))
        return ps


# --------------------------------------------------------------------------------------------
# Notify (ipn.Notify) on /localapi/v0/watch-ipn-bus


class NotifyWatchOpt(enum.IntFlag):
    """ipn.NotifyWatchOpt bits for the `mask` query parameter of watch-ipn-bus."""

    ENGINE_UPDATES = 1 << 0
    INITIAL_STATE = 1 << 1
    INITIAL_PREFS = 1 << 2
    INITIAL_NETMAP = 1 << 3
    NO_PRIVATE_KEYS = 1 << 4
    INITIAL_DRIVE_SHARES = 1 << 5
    INITIAL_OUTGOING_FILES = 1 << 6
    INITIAL_HEALTH_STATE = 1 << 7
    RATE_LIMIT = 1 << 8
    HEALTH_ACTIONS = 1 << 9
    INITIAL_SUGGESTED_EXIT_NODE = 1 << 10


@dataclass(frozen=True)
class EngineStatus(Wire):
    """ipn.EngineStatus: live WireGuard counters (LivePeers keyed by nodekey)."""

    r_bytes: int = gofield("RBytes", 0)
    w_bytes: int = gofield("WBytes", 0)
    num_live: int = gofield("NumLive", 0)
    live_derps: int = gofield("LiveDERPs", 0)
    live_peers: dict[str, Any] | None = gofield("LivePeers", None)


@dataclass(frozen=True)
class NodeKeyRotation(Wire):
    """meshvpn extension of ipn.Notify: control replaced the node key (expiry → re-registration).

    Wire: {"NodePublic": "nodekey:<hex>", "OldNodePublic": "nodekey:<hex>", "NodeKey": "privkey:<hex>"}.
    The public halves go to every watcher; "NodeKey" (the new private key, the name SetKeysRequest
    uses) only to the watcher allowed to keep it: write access, no NotifyNoPrivateKeys, and the same
    uid that handed the keys over (POST /localapi/v0/meshvpn/keys). It lets the GUI store the new key
    in its keyring, so the next start hands over the key control knows instead of the expired one.
    """

    node_public: str = gofield("NodePublic", "")
    old_node_public: str = gofield("OldNodePublic", "")
    node_private: str = gofield("NodeKey", "", omitempty=True)

    def without_private(self) -> "NodeKeyRotation":
        return dataclasses.replace(self, node_private="") if self.node_private else self

    def __repr__(self) -> str:  # the private half is never printed
        return (
            f"NodeKeyRotation(node_public={self.node_public[:16]}…, old_node_public={self.old_node_public[:16]}…"
            f"{', node_private=<redacted>' if self.node_private else ''})"
        )


@dataclass(frozen=True)
class Notify(Wire):
    """ipn.Notify: one line of the IPN bus. A field that is None was not part of this message.

    NetMap is kept as the JSON object (netmap.NetworkMap shape); Health as health.State JSON.
    """

    version: str = gofield("Version", "")
    session_id: str = gofield("SessionID", "", omitempty=True)
    err_message: str | None = gofield("ErrMessage", None)
    login_finished: dict[str, Any] | None = gofield("LoginFinished", None)
    state: State | None = gofield("State", None)
    prefs: Prefs | None = gofield("Prefs", None)
    net_map: dict[str, Any] | None = gofield("NetMap", None)
    engine: EngineStatus | None = gofield("Engine", None)
    browse_to_url: str | None = gofield("BrowseToURL", None)
    files_waiting: dict[str, Any] | None = gofield("FilesWaiting", None, omitempty=True)
    local_tcp_port: int | None = gofield("LocalTCPPort", None, omitempty=True)
    client_version: dict[str, Any] | None = gofield("ClientVersion", None, omitempty=True)
    drive_shares: list[Any] | None = gofield("DriveShares", None)
    health: dict[str, Any] | None = gofield("Health", None, omitempty=True)
    suggested_exit_node: str | None = gofield("SuggestedExitNode", None, omitempty=True)
    # meshvpn extension (tailscaled has no such field; its clients ignore unknown keys)
    node_key_rotated: NodeKeyRotation | None = gofield("MeshvpnNodeKeyRotated", None, omitempty=True)
    extra: dict = extra_field()

    def without_private_keys(self) -> "Notify":
        """This notification as a watcher without private-key access sees it (NotifyNoPrivateKeys)."""
        if self.node_key_rotated is not None and self.node_key_rotated.node_private:
            return dataclasses.replace(self, node_key_rotated=self.node_key_rotated.without_private())
        return self


# --------------------------------------------------------------------------------------------
# ping, whois


class PingType(str, enum.Enum):
    """tailcfg.PingType values accepted by /localapi/v0/ping."""

    DISCO = "disco"
    TSMP = "TSMP"
    ICMP = "ICMP"
    PEERAPI = "peerapi"


@dataclass(frozen=True)
class PingResult(Wire):
    """ipnstate.PingResult."""

    ip: str = gofield("IP", "")
    node_ip: str = gofield("NodeIP", "")
    node_name: str = gofield("NodeName", "")
    err: str = gofield("Err", "")
    latency_seconds: float = gofield("LatencySeconds", 0.0)
    endpoint: str = gofield("Endpoint", "")
    peer_relay: str = gofield("PeerRelay", "")
    derp_region_id: int = gofield("DERPRegionID", 0)
    derp_region_code: str = gofield("DERPRegionCode", "")
    peer_api_port: int = gofield("PeerAPIPort", 0, omitempty=True)
    peer_api_url: str = gofield("PeerAPIURL", "", omitempty=True)
    is_local_ip: bool = gofield("IsLocalIP", False, omitempty=True)
    extra: dict = extra_field()


@dataclass(frozen=True)
class WhoIsResponse(Wire):
    """apitype.WhoIsResponse; Node is the tailcfg.Node JSON object."""

    node: dict[str, Any] | None = gofield("Node", None)
    user_profile: UserProfile | None = gofield("UserProfile", None)
    cap_map: dict[str, Any] | None = gofield("CapMap", None)


# --------------------------------------------------------------------------------------------
# meshvpn extensions (/localapi/v0/meshvpn/...)


@dataclass(frozen=True)
class SetKeysRequest(Wire):
    """POST /localapi/v0/meshvpn/keys: the GUI hands over the keys from the user's keyring.

    Wire: {"MachineKey": "privkey:<64 hex>", "NodeKey": "privkey:<64 hex>"} (the names of the
    helper's state file); "MachinePrivate"/"NodePrivate" are accepted as aliases. Memory only.
    """

    machine_private: str = gofield("MachineKey", "")
    node_private: str = gofield("NodeKey", "")

    def __repr__(self) -> str:  # secrets never printed
        return "SetKeysRequest(<redacted>)"

    @classmethod
    def from_dict(cls, d: Any) -> "SetKeysRequest":
        if isinstance(d, dict):
            d = {_KEY_ALIASES.get(k, k): v for k, v in d.items()}
        return super().from_dict(d)


_KEY_ALIASES = {"MachinePrivate": "MachineKey", "NodePrivate": "NodeKey"}


@dataclass(frozen=True)
class KeysInfo(Wire):
    """Reply of /localapi/v0/meshvpn/keys: public halves only."""

    machine_public: str = gofield("MachinePublic", "")
    node_public: str = gofield("NodePublic", "")
    source: str = gofield("Source", "")  # "gui", "state-file", "generated", ""


@dataclass(frozen=True)
class ErrorResponse(Wire):
    """JSON error body; tailscale's client reads the `Error` key (case-insensitively)."""

    error: str = gofield("Error", "")


# --------------------------------------------------------------------------------------------
# DNS debugging: dns-osconfig, dns-query


@dataclass(frozen=True)
class DNSResolver(Wire):
    """dnstype.Resolver: "ip", "ip:port" or a DoH URL; BootstrapResolution = the DoH server's IPs."""

    addr: str = gofield("Addr", "", omitempty=True)
    bootstrap_resolution: list[str] | None = gofield("BootstrapResolution", None, omitempty=True)
    use_with_exit_node: bool = gofield("UseWithExitNode", False, omitempty=True)
    extra: dict = extra_field()


@dataclass(frozen=True)
class DNSOSConfig(Wire):
    """apitype.DNSOSConfig (GET /localapi/v0/dns-osconfig); domains without trailing dots.

    As in tailscaled, the standard keys are the system's own DNS settings from before we took
    over (tailscale's "base config": what `tailscale dns status` calls the system DNS). The
    Meshvpn* keys are our additions (tailscale's client ignores them): whether we changed the OS
    DNS at all, what we applied, and whether it sends every name to us (route_all) or only
    the applied match domains.
    """

    nameservers: list[str] = gofield("Nameservers", factory=list)  # the system's own (our upstreams for other names)
    search_domains: list[str] = gofield("SearchDomains", factory=list)
    match_domains: list[str] = gofield("MatchDomains", factory=list)
    applied: bool = gofield("MeshvpnApplied", False)
    route_all: bool = gofield("MeshvpnRouteAll", False)
    applied_nameservers: list[str] = gofield("MeshvpnNameservers", factory=list)
    applied_search_domains: list[str] = gofield("MeshvpnSearchDomains", factory=list)
    applied_match_domains: list[str] = gofield("MeshvpnMatchDomains", factory=list)
    extra: dict = extra_field()


@dataclass(frozen=True)
class DNSQueryResponse(Wire):
    """apitype.DNSQueryResponse (GET /localapi/v0/dns-query): the raw reply and the upstreams it went to.

    Wire: {"Bytes": "<base64 of the DNS message>" (Go []byte), "Resolvers": [dnstype.Resolver] | null}.
    An empty/null Resolvers list means MagicDNS answered locally (a tailnet name, ExtraRecords, NXDOMAIN
    in the tailnet's domain).
    """

    bytes_b64: str = gofield("Bytes", "")
    resolvers: list[DNSResolver] | None = gofield("Resolvers", None)
    extra: dict = extra_field()

    @classmethod
    def of(cls, reply: bytes, resolvers: list[DNSResolver] | None) -> "DNSQueryResponse":
        return cls(bytes_b64=base64.b64encode(reply).decode("ascii"), resolvers=resolvers)

    @property
    def reply(self) -> bytes:
        """The DNS message (raises SchemaError when Bytes is not base64)."""
        try:
            return base64.b64decode(self.bytes_b64.encode("ascii"), validate=True)
        except (ValueError, UnicodeError) as e:
            raise SchemaError(f"DNSQueryResponse.Bytes: not base64: {e}") from None
