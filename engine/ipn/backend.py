"""Pure IPN backend logic: prefs validation, prefs -> engine config, netmap -> ipnstate/tailcfg JSON (no I/O).

The asyncio LocalBackend that owns state and drives the engine is engine/ipn/local.py; the state
machine table is engine/ipn/state.py. Everything here is a function of its arguments.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from engine.ipn.engine_api import EngineConfig, NetMapView, PeerView
from engine.ipn.exitnode import ident_of_view, resolve_exit_node
from engine.localapi.schema import (
    DEFAULT_CONTROL_URL,
    GO_ZERO_TIME,
    ZERO_NODEKEY,
    PeerStatus,
    Prefs,
)

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class PrefsError(ValueError):
    """An edit the backend refuses (message goes to the caller verbatim)."""


class BackendError(RuntimeError):
    """An operation that cannot run now (e.g. logout while the engine is failing)."""


def _rfc3339(ts: float) -> str:
    if ts <= 0:
        return GO_ZERO_TIME
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def engine_config(prefs: Prefs, *, auth_key: str = "") -> EngineConfig:
    """The engine's view of prefs (pure)."""
    return EngineConfig(
        control_url=prefs.control_url or DEFAULT_CONTROL_URL,
        hostname=prefs.hostname,
        auth_key=auth_key,
        exit_node_id=prefs.exit_node_id,
        exit_node_ip=prefs.exit_node_ip,
        exit_node_allow_lan_access=prefs.exit_node_allow_lan_access,
        corp_dns=prefs.corp_dns,
        route_all=prefs.route_all,
        advertise_routes=tuple(prefs.advertise_routes or ()),
        shields_up=prefs.shields_up,
    )


def exit_node_of(prefs: Prefs, nm: NetMapView | None) -> PeerView | None:
    """The peer of ``nm`` that the prefs' ExitNodeID (or ExitNodeIP) names (engine.ipn.exitnode's resolver)."""
    if nm is None:
        return None
    return resolve_exit_node(prefs.exit_node_id or prefs.exit_node_ip, nm.peers, ident_of_view)


def peer_status(
    p: PeerView, *, derp_regions: dict[int, str], is_exit_node: bool = False, is_self: bool = False
) -> PeerStatus:
    """ipnstate.PeerStatus for one netmap node (pure); ``is_exit_node``: the exit node in use (exit_node_of)."""
    is_exit = (not is_self) and is_exit_node
    relay = p.relay or derp_regions.get(p.home_derp, "")
    return PeerStatus(
        id=p.stable_id,
        public_key=p.node_key or ZERO_NODEKEY,
        host_name=p.hostname,
        dns_name=p.name,
        os=p.os,
        user_id=p.user_id,
        tailscale_ips=list(p.addresses) or None,
        allowed_ips=list(p.allowed_ips) or None,
        tags=list(p.tags) or None,
        primary_routes=list(p.primary_routes) or None,
        addrs=list(p.endpoints) if not is_self else [],
        cur_addr=p.cur_addr,
        relay=relay,
        rx_bytes=p.rx_bytes,
        tx_bytes=p.tx_bytes,
        created=p.created or GO_ZERO_TIME,
        last_write=_rfc3339(p.last_write),
        last_seen=(p.last_seen or GO_ZERO_TIME) if not p.online else GO_ZERO_TIME,
        last_handshake=_rfc3339(p.last_handshake),
        online=p.online,
        exit_node=is_exit,
        exit_node_option=(not is_self) and p.exit_node_option,
        active=p.active,
        in_network_map=True,
        in_magic_sock=not is_self,
        in_engine=not is_self,
        expired=p.expired,
        key_expiry=p.key_expiry or None,
    )


def node_json(p: PeerView) -> dict[str, Any]:
    """A tailcfg.Node JSON object for NetMap notifications and whois (pure)."""
    d: dict[str, Any] = {
        "ID": p.node_id,
        "StableID": p.stable_id,
        "Name": p.name,
        "User": p.user_id,
        "Key": p.node_key or ZERO_NODEKEY,
        "Addresses": [a + ("/32" if ":" not in a else "/128") for a in p.addresses],
        "AllowedIPs": list(p.allowed_ips),
        "Endpoints": list(p.endpoints),
        "HomeDERP": p.home_derp,
        "Hostinfo": {"Hostname": p.hostname, "OS": p.os},
        "Created": p.created or GO_ZERO_TIME,
        "MachineAuthorized": True,
    }
    if p.key_expiry:
        d["KeyExpiry"] = p.key_expiry
    if p.primary_routes:
        d["PrimaryRoutes"] = list(p.primary_routes)
    if p.tags:
        d["Tags"] = list(p.tags)
    d["Online"] = p.online
    if p.last_seen:
        d["LastSeen"] = p.last_seen
    return d


def netmap_json(nm: NetMapView) -> dict[str, Any]:
    """netmap.NetworkMap JSON (the subset clients read; never a private key)."""
    return {
        "SelfNode": node_json(nm.self_node),
        "NodeKey": nm.self_node.node_key or ZERO_NODEKEY,
        "Name": nm.self_node.name,
        "Peers": [node_json(p) for p in sorted(nm.peers, key=lambda p: p.node_id)],
        "Domain": nm.domain,
        "UserProfiles": {
            str(u.id): {"ID": u.id, "LoginName": u.login_name, "DisplayName": u.display_name} for u in nm.users
        },
        "DNS": nm.dns_config if nm.dns_config is not None else {},
    }


def _valid_prefix(s: str) -> bool:
    try:
        ipaddress.ip_network(s, strict=True)
        return True
    except ValueError:
        return False


def check_prefs(p: Prefs, nm: NetMapView | None) -> None:
    """Raise PrefsError if `p` cannot be applied (tailscaled's CheckPrefs + our limits; exit node vs `nm`)."""
    if p.run_ssh:
        raise PrefsError("the Tailscale SSH server is not supported by meshvpn")
    if p.run_web_client:
        raise PrefsError("the web client is not supported by meshvpn")
    if p.control_url and not re.match(r"^https?://[^/\s]+", p.control_url):
        raise PrefsError(f"invalid control URL {p.control_url!r}: want http:// or https://")
    if p.hostname and not all(_HOSTNAME_RE.match(lbl) for lbl in p.hostname.split(".")):
        raise PrefsError(f"invalid hostname {p.hostname!r}")
    for r in p.advertise_routes or ():
        if not _valid_prefix(r):
            raise PrefsError(f"invalid route to advertise {r!r}: want a network prefix like 10.0.0.0/24")
    if p.exit_node_ip and p.exit_node_id:
        raise PrefsError("cannot set ExitNodeIP when ExitNodeID is already set")
    if p.exit_node_ip:
        try:
            ipaddress.ip_address(p.exit_node_ip)
        except ValueError:
            raise PrefsError(f"invalid exit node IP {p.exit_node_ip!r}") from None
    check_exit_node(p, nm)


def check_exit_node(p: Prefs, nm: NetMapView | None) -> None:
    """The selected exit node must exist in the netmap, offer exit routes, and not be us."""
    if nm is None or not (p.exit_node_ip or p.exit_node_id):
        return
    if p.exit_node_ip and p.exit_node_ip in nm.self_node.addresses:
        raise PrefsError(f"cannot use {p.exit_node_ip} as an exit node: it is this machine's own Tailscale IP")
    peer = exit_node_of(p, nm)
    if peer is not None:
        if not peer.exit_node_option:
            where = peer.addresses[0] if peer.addresses else peer.stable_id
            raise PrefsError(f"node {peer.name.split('.')[0]} ({where}) is not advertising an exit node")
        return
    what = p.exit_node_ip or p.exit_node_id
    raise PrefsError(f"no node found in netmap with {'IP' if p.exit_node_ip else 'ID'} {what}")
