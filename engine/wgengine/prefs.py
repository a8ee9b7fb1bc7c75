"""What the engine derives from the backend's prefs (engine.ipn.engine_api.EngineConfig), in one place (pure).

The engine reads EngineConfig through the ``EnginePrefs`` protocol below (the same fields, so
wgengine needs no import of engine.ipn): one prefs type from the LocalAPI schema down.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from engine.net.tsaddr import EXIT_ROUTES, canonical_routes, contains_exit_routes


class EnginePrefs(Protocol):
    """The EngineConfig fields the engine reads (see engine/ipn/engine_api.py for their meaning)."""

    @property
    def exit_node_id(self) -> str: ...
    @property
    def exit_node_ip(self) -> str: ...
    @property
    def exit_node_allow_lan_access(self) -> bool: ...
    @property
    def corp_dns(self) -> bool: ...
    @property
    def route_all(self) -> bool: ...
    @property
    def advertise_routes(self) -> tuple[str, ...]: ...
    @property
    def shields_up(self) -> bool: ...


def exit_spec(p: EnginePrefs) -> str | None:
    """The exit node the user chose (StableID, else IP), None for none."""
    v = (p.exit_node_id or p.exit_node_ip or "").strip()
    return v or None


def advertises_exit(p: EnginePrefs) -> bool:
    """We offer ourselves as an exit node (both default routes advertised)."""
    return contains_exit_routes(canonical_routes(p.advertise_routes))


def subnet_routes(p: EnginePrefs) -> tuple[str, ...]:
    """The advertised subnet routes, without the exit-route pair."""
    return tuple(r for r in canonical_routes(p.advertise_routes) if r not in EXIT_ROUTES)


def routable_ips(p: EnginePrefs) -> tuple[str, ...]:
    """Hostinfo.RoutableIPs: advertised subnets, plus both defaults when offering an exit node."""
    out = list(subnet_routes(p))
    if advertises_exit(p):
        out += [r for r in EXIT_ROUTES if r not in out]
    return tuple(out)


def forwards(p: EnginePrefs) -> bool:
    """We forward for peers (exit node or subnet router)."""
    return bool(routable_ips(p))


def offers_default_route(p: EnginePrefs) -> bool:
    return any(ipaddress.ip_network(r).prefixlen == 0 for r in routable_ips(p))


def prefs_problem(p: EnginePrefs) -> str | None:
    """Why these prefs cannot be applied (None if they can)."""
    try:
        canonical_routes(p.advertise_routes)
    except ValueError as e:
        return f"advertise-routes: {e}"
    if exit_spec(p) and advertises_exit(p):
        return "cannot advertise an exit node and use an exit node at the same time"
    return None


def prefs_key(p: EnginePrefs) -> tuple:
    """Everything of ``p`` the engine acts on (equal keys: nothing to re-apply)."""
    return (
        exit_spec(p),
        bool(p.exit_node_allow_lan_access),
        bool(p.corp_dns),
        bool(p.route_all),
        routable_ips(p),
        bool(p.shields_up),
    )


def prefs_doc(p: EnginePrefs | None) -> dict[str, Any]:
    """The "Prefs" object of the engine's debug document."""
    if p is None:
        return {
            "ExitNode": None,
            "ExitNodeAllowLANAccess": False,
            "AdvertiseExitNode": False,
            "AdvertiseRoutes": [],
            "AcceptDNS": True,
            "AcceptRoutes": False,
            "ShieldsUp": False,
        }
    return {
        "ExitNode": exit_spec(p),
        "ExitNodeAllowLANAccess": bool(p.exit_node_allow_lan_access),
        "AdvertiseExitNode": advertises_exit(p),
        "AdvertiseRoutes": list(subnet_routes(p)),
        "AcceptDNS": bool(p.corp_dns),
        "AcceptRoutes": bool(p.route_all),
        "ShieldsUp": bool(p.shields_up),
    }
