"""Sans-IO map session: applies MapResponses (full and every delta form) into a typed NetworkMap.

Apply order for one MapResponse (tailscale control/controlclient/map.go):

    Node (self; None = unchanged), DERPMap, DNSConfig, Domain ("" = unchanged), CollectServices,
    PacketFilter / PacketFilters, UserProfiles, Health, SSHPolicy, then peers:
      Peers non-empty  -> full replacement, all delta fields ignored
      else             -> PeersRemoved, PeersChanged, PeerSeenChange, OnlineChange, PeersChangedPatch

Peers are kept in a dict by node ID, so each delta costs O(size of the delta), and
re-applying the same message is idempotent. ``NetworkMap.peers`` is a read-only *view*
of the session's dict: it is valid until the next ``apply``; call ``snapshot()`` for a
stable copy.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from engine.tailcfg import DERPMap, DNSConfig, FilterRule, MapResponse, Node, PeerChange, UserProfile
from engine.tailcfg.timefmt import format_time
from engine.types.netmap import NetworkMap, PeerDelta

PACKET_FILTER_BASE = "base"  # PacketFilter == PacketFilters["base"]


class MapSession:
    """Accumulates one map stream's state. Create a new session per stream (Go does too)."""

    def __init__(self, *, logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self._log = logger or logging.getLogger("engine.control.mapsession")
        self._self: Node | None = None
        self._peers: dict[int, Node] = {}
        self._peers_view = MappingProxyType(self._peers)
        self._derp_map: DERPMap | None = None
        self._dns: DNSConfig | None = None
        self._domain = ""
        self._filters: dict[str, tuple[FilterRule, ...]] = {}
        self._have_filter = False
        self._filter_cache: tuple[FilterRule, ...] | None = None
        self._profiles: dict[int, UserProfile] = {}
        self._profiles_view = MappingProxyType(self._profiles)
        self._collect_services = False
        self._control_time: str | None = None
        self._health: tuple[str, ...] = ()
        self._ssh_policy: Any = None
        self._seq = 0
        self.netmap: NetworkMap | None = None
        self.patches_for_unknown_peers = 0  # dropped-and-counted

    def apply(self, resp: MapResponse, *, now: float) -> NetworkMap | None:
        """Apply one response; returns the new NetworkMap, or None for a keep-alive.

        ``now`` is the wall-clock Unix time, used for PeerSeenChange (LastSeen = now).
        Before the first response that carries ``Node`` no NetworkMap is produced.
        """
        if resp.is_keepalive_only():
            if resp.control_time:
                self._control_time = resp.control_time
            return None
        self._seq += 1
        self_changed = False
        if resp.node is not None:
            self_changed = self._self != resp.node
            self._self = resp.node
        if resp.derp_map is not None:
            self._derp_map = resp.derp_map
        if resp.dns_config is not None:
            self._dns = resp.dns_config
        if resp.domain:
            self._domain = resp.domain
        if resp.collect_services is not None:
            self._collect_services = resp.collect_services
        if resp.control_time:
            self._control_time = resp.control_time
        if resp.health is not None:
            self._health = resp.health
        if resp.ssh_policy is not None:
            self._ssh_policy = resp.ssh_policy
        self._apply_filters(resp)
        if resp.user_profiles:
            for up in resp.user_profiles:
                self._profiles[up.id] = up
        delta = self._apply_peers(resp, now)
        if self._self is None:
            return None
        if self.netmap is None:  # first map of this stream: consumers must treat it as complete
            delta = PeerDelta(full=True, removed=delta.removed)
        self.netmap = NetworkMap(
            self_node=self._self,
            peers=self._peers_view,
            derp_map=self._derp_map,
            dns_config=self._dns,
            domain=self._domain,
            packet_filter=self._packet_filter(),
            user_profiles=self._profiles_view,
            collect_services=self._collect_services,
            control_time=self._control_time,
            health=self._health,
            ssh_policy=self._ssh_policy,
            seq=self._seq,
            delta=delta,
            self_changed=self_changed,
        )
        return self.netmap

    # -- packet filter ------------------------------------------------------------------

    def _apply_filters(self, resp: MapResponse) -> None:
        if resp.packet_filter is not None:
            self._filters[PACKET_FILTER_BASE] = resp.packet_filter
            self._have_filter = True
            self._filter_cache = None
        if resp.packet_filters is not None:
            pf = resp.packet_filters
            if "*" in pf and pf["*"] is None:
                self._filters.clear()
            for k, rules in pf.items():
                if k == "*" and rules is None:
                    continue
                if rules is None:
                    self._filters.pop(k, None)
                else:
                    self._filters[k] = rules
            self._have_filter = True
            self._filter_cache = None

    def _packet_filter(self) -> tuple[FilterRule, ...] | None:
        if not self._have_filter:
            return None
        if self._filter_cache is None:
            out: list[FilterRule] = []
            for k in sorted(self._filters):
                out.extend(self._filters[k])
            self._filter_cache = tuple(out)
        return self._filter_cache

    # -- peers --------------------------------------------------------------------------

    def _apply_peers(self, resp: MapResponse, now: float) -> PeerDelta:
        peers = self._peers
        if resp.peers:  # non-empty: not delta encoded
            keep = set()
            for n in resp.peers:
                keep.add(n.id)
                peers[n.id] = n
            removed = [pid for pid in peers if pid not in keep]
            for pid in removed:
                del peers[pid]
            return PeerDelta(full=True, removed=frozenset(removed))
        changed: set[int] = set()
        removed_set: set[int] = set()
        for pid in resp.peers_removed or ():
            if peers.pop(pid, None) is not None:
                removed_set.add(pid)
        for n in resp.peers_changed or ():
            if peers.get(n.id) != n:
                peers[n.id] = n
                changed.add(n.id)
            removed_set.discard(n.id)
        if resp.peer_seen_change:
            seen_now = format_time(datetime.fromtimestamp(now, timezone.utc))
            for pid, seen in resp.peer_seen_change.items():
                n = peers.get(pid)
                if n is None:
                    continue
                peers[pid] = dataclasses.replace(n, last_seen=seen_now if seen else None)
                changed.add(pid)
        for pid, online in (resp.online_change or {}).items():
            n = peers.get(pid)
            if n is None or n.online == online:
                continue
            peers[pid] = dataclasses.replace(n, online=online)
            changed.add(pid)
        for pc in resp.peers_changed_patch or ():
            n = peers.get(pc.node_id)
            if n is None:
                self.patches_for_unknown_peers += 1
                continue
            m = apply_patch(n, pc)
            if m != n:
                peers[pc.node_id] = m
                changed.add(pc.node_id)
        return PeerDelta(changed=frozenset(changed), removed=frozenset(removed_set))


def apply_patch(n: Node, pc: PeerChange) -> Node:
    """Node with the PeerChange applied (zero DERPRegion/Cap mean "unchanged", like Go)."""
    kw: dict[str, Any] = {}
    if pc.derp_region:
        kw["home_derp"] = pc.derp_region
        kw["derp"] = None
    if pc.cap:
        kw["cap"] = pc.cap
    if pc.endpoints is not None:
        kw["endpoints"] = pc.endpoints
    if pc.key is not None:
        kw["key"] = pc.key
    if pc.disco_key is not None:
        kw["disco_key"] = pc.disco_key
    if pc.online is not None:
        kw["online"] = pc.online
    if pc.last_seen is not None:
        kw["last_seen"] = pc.last_seen
    if pc.key_expiry is not None:
        kw["key_expiry"] = pc.key_expiry
    if pc.key_signature is not None:
        kw["key_signature"] = pc.key_signature
    if pc.cap_map is not None:
        kw["cap_map"] = pc.cap_map
    return dataclasses.replace(n, **kw) if kw else n


__all__ = ["MapSession", "apply_patch", "PACKET_FILTER_BASE"]
