"""Capability versions: what this client claims on the wire (tailcfg.CurrentCapabilityVersion)."""

from __future__ import annotations

CURRENT_CAPABILITY_VERSION = 130
"""Same as tailscale v1.90.x (tailcfg/tailcfg.go). Headscale v0.29 requires >= 113."""

HEADSCALE_MIN_CAPABILITY_VERSION = 113  # hs:hscontrol/capver/capver_generated.go (Tailscale v1.80)

# A few landmarks of the history we rely on (tailcfg.go comments; see the protocol brief §3-4).
CAPABILITY_HISTORY: tuple[tuple[int, str], ...] = (
    (68, "MapRequest.ReadOnly is deprecated; Stream implies read-write"),
    (112, "Node.AllowedIPs may be null meaning 'same as Addresses'"),
    (113, "Tailscale v1.80: Headscale v0.29 minimum"),
    (116, "Tailscale v1.84"),
    (120, "disco peer-relay messages"),
    (122, "Hostinfo.ExitNodeID"),
    (124, "crypto routing mandatory"),
    (130, "Tailscale v1.90"),
)
