"""Tiny builders for LocalAPI JSON in tailscaled's shapes (ipnstate.Status, ipn.Notify, ipn.Prefs)."""

from __future__ import annotations

import copy
from typing import Any, Callable

Mod = Callable[[dict], None]


def peer(n: int, *mods: Mod) -> tuple[str, dict[str, Any]]:
    """A PeerStatus for peer number n, keyed by a fake node key."""
    key = f"nodekey:{n:064x}"
    p: dict[str, Any] = {
        "ID": f"n{n}CNTRL",
        "PublicKey": key,
        "HostName": f"host{n}",
        "DNSName": f"host{n}.tail1234.ts.net.",
        "OS": "linux",
        "UserID": 1,
        "TailscaleIPs": [f"100.64.{n // 250}.{n % 250 + 1}", f"fd7a:115c:a1e0::{n:x}"],
        "CurAddr": "",
        "Relay": "fra",
        "PeerRelay": "",
        "RxBytes": 0,
        "TxBytes": 0,
        "LastHandshake": "0001-01-01T00:00:00Z",
        "Online": True,
        "ExitNode": False,
        "ExitNodeOption": False,
    }
    for m in mods:
        m(p)
    return key, p


def offline(p: dict) -> None:
    p["Online"] = False


def direct(addr: str = "203.0.113.7:41641") -> Mod:
    def m(p: dict) -> None:
        p["CurAddr"] = addr

    return m


def exit_option(p: dict) -> None:
    p["ExitNodeOption"] = True


def named(name: str) -> Mod:
    def m(p: dict) -> None:
        p["HostName"] = name
        p["DNSName"] = f"{name}.tail1234.ts.net."

    return m


def status(
    backend: str = "Running",
    peers: list[tuple[str, dict]] = (),
    *,
    key_expiry: str | None = None,
    exit_node: str | None = None,
    health: list[str] | None = None,
    self_allowed_ips: list[str] | None = None,
    self_primary_routes: list[str] | None = None,
) -> dict[str, Any]:
    self_node: dict[str, Any] = {
        "ID": "selfCNTRL",
        "PublicKey": "nodekey:" + "ab" * 32,
        "HostName": "laptop",
        "DNSName": "laptop.tail1234.ts.net.",
        "OS": "linux",
        "UserID": 1,
        "TailscaleIPs": ["fd7a:115c:a1e0::1", "100.64.0.1"],
        "Online": True,
    }
    if key_expiry:
        self_node["KeyExpiry"] = key_expiry
    if self_allowed_ips is not None:  # absent by default: approval of advertised routes unknown
        self_node["AllowedIPs"] = self_allowed_ips
    if self_primary_routes is not None:
        self_node["PrimaryRoutes"] = self_primary_routes
    s: dict[str, Any] = {
        "Version": "1.90.9",
        "BackendState": backend,
        "TailscaleIPs": self_node["TailscaleIPs"],
        "Self": self_node,
        "Health": health or [],
        "CurrentTailnet": {"Name": "alice@example.com", "MagicDNSSuffix": "tail1234.ts.net"},
        "Peer": {k: copy.deepcopy(v) for k, v in peers} or None,
        "User": {"1": {"ID": 1, "LoginName": "alice@example.com", "DisplayName": "Alice"}},
    }
    if exit_node:
        s["ExitNodeStatus"] = {"ID": exit_node, "Online": True, "TailscaleIPs": []}
    return s


def notify(**fields: Any) -> dict[str, Any]:
    n: dict[str, Any] = {"Version": "1.90.9"}
    n.update(fields)
    return n


def prefs(**fields: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "ControlURL": "https://controlplane.tailscale.com",
        "WantRunning": True,
        "LoggedOut": False,
        "ExitNodeID": "",
        "ExitNodeAllowLANAccess": False,
        "CorpDNS": True,
        "RouteAll": False,
        "ShieldsUp": False,
        "AdvertiseRoutes": None,
    }
    p.update(fields)
    return p
