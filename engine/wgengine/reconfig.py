"""Pure functions NetworkMap -> (WgConfig, RouterConfig), and diffs against the last applied config.

Peer rules (after tailscale wgengine/wgcfg/nmcfg): expired peers are skipped; AllowedIPs
(None = Addresses) keep /0 routes only for the selected exit node and subnet routes only
with ``accept_routes``; the peer's own addresses are always kept. Until magicsock exists,
the WireGuard endpoint is chosen directly from the peer's Endpoints (``pick_endpoint``).

Reconfiguration is declarative: ``diff_wg(old, new)`` returns ``NO_CHANGES`` when equal,
applying the empty config restores everything.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from engine.net.tsaddr import CGNAT_V4, EXIT_ROUTES, TAILNET_V6
from engine.tailcfg import Node
from engine.types.keys import DiscoPublic, NodePublic
from engine.types.netmap import NetworkMap, PeerDelta

TAILSCALE_ULA_V6 = TAILNET_V6


class _NoChanges:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_CHANGES"

    def __bool__(self) -> bool:
        return False


NO_CHANGES = _NoChanges()


@dataclass(frozen=True, slots=True)
class WgPeer:
    public_key: NodePublic
    allowed_ips: tuple[str, ...]  # canonical CIDR text, sorted
    endpoint: str | None  # chosen "ip:port" (None = unknown)
    endpoints: tuple[str, ...] = ()
    disco_key: DiscoPublic | None = None
    home_derp: int = 0
    node_id: int = 0


@dataclass(frozen=True, slots=True)
class WgConfig:
    """Peers by public key; ``ids`` maps node ID -> public key for incremental updates."""

    peers: Mapping[NodePublic, WgPeer] = field(default_factory=lambda: MappingProxyType({}))
    ids: Mapping[int, NodePublic] = field(default_factory=lambda: MappingProxyType({}))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WgConfig) and dict(self.peers) == dict(other.peers)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class RouterConfig:
    local_addrs: tuple[str, ...] = ()  # CIDR on the TUN (e.g. 100.64.0.1/32)
    routes: tuple[str, ...] = ()  # CIDRs routed into the TUN

    def is_empty(self) -> bool:
        return not self.local_addrs and not self.routes


@dataclass(frozen=True, slots=True)
class WgDiff:
    upsert: tuple[WgPeer, ...]
    remove: tuple[NodePublic, ...]


@dataclass(frozen=True, slots=True)
class ReconfigOptions:
    exit_node_id: int | None = None
    accept_routes: bool = False
    prefer_v6: bool = False


@functools.lru_cache(maxsize=1 << 16)
def _canon(cidr: str) -> str | None:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return None


_DEFAULT_ROUTES = frozenset(EXIT_ROUTES)


def _is_default(net: str) -> bool:
    return net in _DEFAULT_ROUTES


def pick_endpoint(endpoints: tuple[str, ...] | None, *, prefer_v6: bool = False) -> str | None:
    """First usable endpoint: IPv4 (or v6 if preferred) before the other family; no loopback/link-local."""
    if not endpoints:
        return None
    best: list[tuple[int, int, str]] = []
    for i, ep in enumerate(endpoints):
        host, _, port = ep.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
            int(port)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        fam_rank = 0 if (ip.version == 6) == prefer_v6 else 1
        best.append((fam_rank, i, ep))
    if not best:
        return None
    return min(best)[2]


def peer_config(
    n: Node, opts: ReconfigOptions, now_unix: float | None = None, problems: list[str] | None = None
) -> WgPeer | None:
    """The WireGuard peer for one Node, or None if it must be skipped.

    ``problems``, if given, collects one line per malformed entry (unparsable prefix, missing key):
    the entry is skipped, never fatal.
    """
    if n.key is None or n.key.is_zero():
        if problems is not None and not n.expired:
            problems.append(f"node {n.id}: no node key")
        return None
    if n.expired:
        return None
    addrs = {c for c in (_canon(a) for a in n.addresses) if c}
    allowed = []
    for a in n.effective_allowed_ips():
        c = _canon(a)
        if c is None:
            if problems is not None:
                problems.append(f"node {n.id}: bad prefix {a!r}")
            continue
        if c in addrs:
            allowed.append(c)
        elif _is_default(c):
            if opts.exit_node_id is not None and n.id == opts.exit_node_id:
                allowed.append(c)
        elif opts.accept_routes:
            allowed.append(c)
    return WgPeer(
        public_key=n.key,
        allowed_ips=tuple(sorted(set(allowed))),
        endpoint=pick_endpoint(n.endpoints, prefer_v6=opts.prefer_v6),
        endpoints=tuple(n.endpoints or ()),
        disco_key=n.disco_key,
        home_derp=n.effective_home_derp(),
        node_id=n.id,
    )


def _safe_peer_config(n: Node, opts: ReconfigOptions, problems: list[str] | None) -> WgPeer | None:
    """peer_config, with an entry it cannot read (wrong types from a hostile map) skipped and reported."""
    if problems is None:
        return peer_config(n, opts)
    try:
        return peer_config(n, opts, problems=problems)
    except (AttributeError, TypeError, ValueError) as e:
        problems.append(f"node {getattr(n, 'id', '?')}: unusable ({type(e).__name__})")
        return None


def wg_config(
    nm: NetworkMap | None,
    opts: ReconfigOptions = ReconfigOptions(),
    prev: WgConfig | None = None,
    problems: list[str] | None = None,
) -> WgConfig:
    """WgConfig for ``nm``. With ``prev`` and a non-full delta, only changed peers are recomputed.

    ``problems``: see peer_config (malformed peers are skipped and described there).
    """
    if nm is None:
        return WgConfig()
    delta: PeerDelta = nm.delta
    if prev is not None and not delta.full:
        peers = prev.peers.copy()  # C-level dict copy (mappingproxy.copy)
        ids = prev.ids.copy()
        for pid in delta.removed | delta.changed:
            old = ids.pop(pid, None)
            if old is not None:
                peers.pop(old, None)
        for pid in delta.changed:
            n = nm.peers.get(pid)
            if n is None:
                continue
            pc = _safe_peer_config(n, opts, problems)
            if pc is not None:
                peers[pc.public_key] = pc
                ids[pid] = pc.public_key
        return WgConfig(MappingProxyType(peers), MappingProxyType(ids))
    peers = {}
    ids = {}
    for pid, n in nm.peers.items():
        pc = _safe_peer_config(n, opts, problems)
        if pc is not None:
            peers[pc.public_key] = pc
            ids[pid] = pc.public_key
    return WgConfig(MappingProxyType(peers), MappingProxyType(ids))


def router_config(nm: NetworkMap | None, wg: WgConfig | None = None) -> RouterConfig:
    """Local addresses from the self node (Tailscale ranges only) and main-table routes for all peers' allowed IPs.

    The default routes (0.0.0.0/0, ::/0) of a selected exit node are never main-table routes:
    engine.router.exitnode.ExitRouter owns them in table 52 behind the fwmark policy rules.
    """
    if nm is None or nm.self_node is None:
        return RouterConfig()
    local = []
    for a in nm.self_node.addresses:
        try:
            iface = ipaddress.ip_interface(a)
        except ValueError:
            continue
        if iface.ip in CGNAT_V4 or iface.ip in TAILSCALE_ULA_V6:
            local.append(str(iface))
    own = {str(ipaddress.ip_interface(a).network) for a in local}
    wg = wg if wg is not None else wg_config(nm)
    routes = set()
    for p in wg.peers.values():
        routes.update(p.allowed_ips)
    routes -= own
    routes.difference_update(_DEFAULT_ROUTES)
    return RouterConfig(local_addrs=tuple(sorted(local)), routes=tuple(sorted(routes)))


def diff_wg(old: WgConfig | None, new: WgConfig, hint: PeerDelta | None = None) -> WgDiff | _NoChanges:
    """Peers to upsert/remove to go from ``old`` to ``new``; NO_CHANGES if equal.

    With a non-full ``hint`` only the hinted node IDs are compared (O(delta)).
    """
    old_peers = old.peers if old is not None else {}
    if hint is not None and not hint.full and old is not None:
        keys: set[NodePublic] = set()
        for pid in hint.changed | hint.removed:
            for m in (old.ids, new.ids):
                k = m.get(pid)
                if k is not None:
                    keys.add(k)
    else:
        keys = set(old_peers) | set(new.peers)
    upsert = []
    remove = []
    for k in keys:
        a, b = old_peers.get(k), new.peers.get(k)
        if b is None:
            if a is not None:
                remove.append(k)
        elif a != b:
            upsert.append(b)
    if not upsert and not remove:
        return NO_CHANGES
    upsert.sort(key=lambda p: p.node_id)
    remove.sort(key=lambda k: k.raw)
    return WgDiff(tuple(upsert), tuple(remove))


def diff_router(old: RouterConfig | None, new: RouterConfig) -> RouterConfig | _NoChanges:
    return NO_CHANGES if old == new else new


__all__ = [
    "WgPeer",
    "WgConfig",
    "RouterConfig",
    "WgDiff",
    "ReconfigOptions",
    "NO_CHANGES",
    "wg_config",
    "router_config",
    "diff_wg",
    "diff_router",
    "pick_endpoint",
    "peer_config",
]
