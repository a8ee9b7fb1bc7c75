"""The network map: this node, its peers, DNS, DERP map and packet filters as control last described them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from engine.tailcfg import DERPMap, DNSConfig, FilterRule, Node, UserProfile
from engine.tailcfg.timefmt import unix_time
from engine.types.keys import NodePublic


@dataclass(frozen=True, slots=True)
class PeerDelta:
    """What the last apply changed: full=True means "everything may have changed"."""

    full: bool = False
    changed: frozenset[int] = frozenset()
    removed: frozenset[int] = frozenset()

    def is_empty(self) -> bool:
        return not self.full and not self.changed and not self.removed


@dataclass(frozen=True, slots=True)
class NetworkMap:
    """The client's current view of the tailnet."""

    self_node: Node | None
    peers: Mapping[int, Node]  # by node ID; a view, see module docstring
    derp_map: DERPMap | None
    dns_config: DNSConfig | None
    domain: str
    packet_filter: tuple[FilterRule, ...] | None  # None = no filter received yet (AllowNone)
    user_profiles: Mapping[int, UserProfile]
    collect_services: bool
    control_time: str | None
    health: tuple[str, ...]
    ssh_policy: Any
    seq: int  # number of non-keepalive responses applied
    delta: PeerDelta = field(default_factory=PeerDelta)
    self_changed: bool = False

    @property
    def node_key(self) -> NodePublic | None:
        return self.self_node.key if self.self_node else None

    def sorted_peers(self) -> list[Node]:
        return [self.peers[k] for k in sorted(self.peers)]

    def peer_by_key(self, key: NodePublic) -> Node | None:
        for p in self.peers.values():
            if p.key == key:
                return p
        return None

    def snapshot(self) -> "NetworkMap":
        return dataclasses.replace(
            self, peers=MappingProxyType(dict(self.peers)), user_profiles=MappingProxyType(dict(self.user_profiles))
        )

    def self_key_expired(self, now_unix: float) -> bool:
        """True if control says our node key is expired (Expired flag or KeyExpiry in the past)."""
        n = self.self_node
        if n is None:
            return False
        if n.expired:
            return True
        try:
            t = unix_time(n.key_expiry)
        except ValueError:
            return False
        return t is not None and t <= now_unix


__all__ = ["NetworkMap", "PeerDelta"]
