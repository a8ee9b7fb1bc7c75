"""The engine's part of the debug document (GET meshvpn/debug-engine): counters, prefs, filter, peers, paths."""

from __future__ import annotations

from typing import Any

from engine.net.tsaddr import contains_exit_routes

# The document's keys in order; the control client's (State, InMapPoll, LastError, AuthURL, NodeKey,
# StreamsStarted) are filled in by the backend side (engine/ipn/tailnet_engine.py).
DOC_KEYS = (
    "State",
    "InMapPoll",
    "LastError",
    "AuthURL",
    "NodeKey",
    "ListenPort",
    "Reconfigs",
    "PeerUpserts",
    "PeerRemoves",
    "StreamsStarted",
    "Prefs",
    "ExitNodeID",
    "MagicDNS",
    "Filter",
    "Self",
    "Peers",
    "Magicsock",
)


def offers_exit(n: Any) -> bool:
    """A peer is an exit-node option iff its AllowedIPs contain both 0.0.0.0/0 and ::/0."""
    return contains_exit_routes(n.effective_allowed_ips())


def netmap_doc(nm: Any) -> tuple[dict | None, list[dict]]:
    """("Self", "Peers") of the document for the applied netmap (None, [] without one)."""
    if nm is None or nm.self_node is None:
        return None, []
    s = nm.self_node
    me = {"ID": s.id, "Name": s.name, "Addresses": list(s.addresses), "AllowedIPs": list(s.effective_allowed_ips())}
    peers = [
        {
            "ID": p.id,
            "Name": p.name,
            "Key": str(p.key),
            "Addresses": list(p.addresses),
            "AllowedIPs": list(p.effective_allowed_ips()),
            "Endpoints": list(p.endpoints or ()),
            "DiscoKey": str(p.disco_key) if p.disco_key else None,
            "HomeDERP": p.effective_home_derp(),
            "Online": p.online,
            "ExitNodeOption": offers_exit(p),
        }
        for p in nm.sorted_peers()
    ]
    return me, peers


def add_paths(peers: list[dict], transport: Any) -> dict:
    """Each peer's magicsock path ("Path") in place; returns magicsock's own status ("Magicsock")."""
    from engine.wgengine.transport import path_json

    paths = transport.paths()
    for d in peers:
        try:
            raw = bytes.fromhex(d["Key"].split(":", 1)[-1])
        except ValueError:
            raw = b""
        d["Path"] = path_json(paths.get(raw))
    return transport.status()


def ordered(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its keys in the document's order (a key that is absent stays absent)."""
    return {k: doc[k] for k in DOC_KEYS if k in doc}
