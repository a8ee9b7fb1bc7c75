"""The one exit-node resolver: which peer an exit-node choice (IP, name, StableID or node ID) names (pure).

Used by the engine side (tailcfg.Node of the netmap), the backend (PeerView) and meshctl
(ipnstate PeerStatus): each passes an ``ident`` function that says how its records are named.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NodeIdent:
    """How a node may be named: its addresses, numeric ID, StableID and names (FQDN, short name, hostname)."""

    addresses: tuple[str, ...] = ()  # IPs, with or without a prefix length
    node_id: int | None = None
    stable_id: str = ""
    names: tuple[str, ...] = ()


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.split("/", 1)[0].strip()))
    except ValueError:
        return None


def resolve_exit_node(spec: str | int | None, peers: Iterable[T], ident: Callable[[T], NodeIdent]) -> T | None:
    """The peer ``spec`` names, or None.

    An IP matches only addresses. Otherwise the first peer whose node ID (all digits) or StableID
    (case-insensitive) equals it wins; failing those, the first whose name does (FQDN with or
    without the trailing dot, its first label, or the hostname; case-insensitive).
    """
    if spec is None or spec == "":
        return None
    text = str(spec).strip().lower().rstrip(".")
    if not text:
        return None
    want_ip = _ip(text)
    by_name: T | None = None
    for p in peers:
        i = ident(p)
        if want_ip is not None:
            if any(_ip(a) == want_ip for a in i.addresses):
                return p
            continue
        if text.isdigit() and i.node_id is not None and i.node_id == int(text):
            return p
        if i.stable_id and i.stable_id.lower() == text:
            return p
        if by_name is None and text in _names(i.names):
            by_name = p
    return by_name


def _names(names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        n = (n or "").lower().rstrip(".")
        if n:
            out.add(n)
            out.add(n.split(".", 1)[0])
    return out


def ident_of_node(n: Any) -> NodeIdent:
    """A tailcfg.Node (the engine's netmap)."""
    hn = n.hostinfo.hostname if n.hostinfo is not None and n.hostinfo.hostname else ""
    return NodeIdent(
        addresses=tuple(n.addresses or ()), node_id=n.id, stable_id=n.stable_id or "", names=(n.name or "", hn)
    )


def ident_of_view(p: Any) -> NodeIdent:
    """An engine_api.PeerView (the backend's netmap)."""
    return NodeIdent(addresses=p.addresses, node_id=p.node_id, stable_id=p.stable_id, names=(p.name, p.hostname))


def ident_of_status(p: Any) -> NodeIdent:
    """An ipnstate PeerStatus (LocalAPI status, as meshctl sees it; no numeric node ID there)."""
    return NodeIdent(addresses=tuple(p.tailscale_ips or ()), stable_id=p.id or "", names=(p.dns_name, p.host_name))
