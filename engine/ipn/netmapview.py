"""The engine's netmap as the backend sees it: engine.types.netmap.NetworkMap + live peer state -> NetMapView (pure)."""

from __future__ import annotations

from typing import Any

from engine.ipn.engine_api import NetMapView, PeerView, UserView

ACTIVE_WINDOW = 120.0  # seconds since the last handshake that count as "active" (tailscale: 2 min)


def _addr(prefix: str) -> str:
    return prefix.split("/")[0]


def netmap_view(nm: Any, stats: dict[str, Any], now: float, paths: dict[str, Any] | None = None) -> NetMapView | None:
    """NetworkMap (+ WireGuard per-peer stats, magicsock PathStatus by nodekey text) -> NetMapView (pure).

    ``nm`` is an engine.types.netmap.NetworkMap. With ``paths`` (a magicsock node), CurAddr is the
    direct path in use ("" while on DERP); without, the WireGuard endpoint once a handshake happened."""
    if nm is None or nm.self_node is None:
        return None
    regions: dict[int, str] = {}
    if nm.derp_map is not None and nm.derp_map.regions:
        regions = {int(rid): r.region_code for rid, r in nm.derp_map.regions.items()}

    def view(n: Any, is_self: bool) -> PeerView:
        hi = n.hostinfo
        key = str(n.key)
        st = stats.get(key)
        ep = ""
        lh = 0.0
        rx = tx = 0
        if st is not None:
            lh = float(st.last_handshake or 0.0)
            rx, tx = st.rx_bytes, st.tx_bytes
            if st.endpoint is not None and lh:
                ep = str(st.endpoint)
        if paths is not None:
            ps = paths.get(key)
            ep = ps.addr if ps is not None and ps.path == "direct" else ""
        derp = n.effective_home_derp()
        return PeerView(
            node_id=n.id,
            stable_id=n.stable_id,
            node_key=key,
            name=n.name,
            hostname=(hi.hostname if hi and hi.hostname else n.name.split(".")[0]),
            os=(hi.os if hi and hi.os else ""),
            user_id=n.user,
            addresses=tuple(_addr(a) for a in n.addresses),
            allowed_ips=tuple(n.effective_allowed_ips()),
            primary_routes=tuple(n.primary_routes or ()),
            tags=tuple(n.tags or ()),
            online=bool(n.online) if n.online is not None else (is_self or bool(lh)),
            last_seen=n.last_seen or "",
            key_expiry=n.key_expiry or "",
            expired=bool(n.expired),
            created=n.created or "",
            endpoints=tuple(n.endpoints or ()),
            home_derp=derp,
            cur_addr=ep,
            relay=regions.get(derp, ""),
            rx_bytes=rx,
            tx_bytes=tx,
            last_handshake=lh,
            active=bool(lh and now - lh < ACTIVE_WINDOW),
        )

    users = tuple(
        UserView(id=u.id, login_name=u.login_name, display_name=u.display_name, profile_pic_url=u.profile_pic_url or "")
        for u in nm.user_profiles.values()
    )
    self_name = nm.self_node.name.rstrip(".")
    suffix = self_name.split(".", 1)[1] if "." in self_name else ""
    return NetMapView(
        self_node=view(nm.self_node, True),
        peers=tuple(view(p, False) for p in nm.sorted_peers()),
        users=users,
        domain=nm.domain,
        magic_dns_suffix=suffix,
        magic_dns_enabled=bool(nm.dns_config is not None and getattr(nm.dns_config, "proxied", False)),
        derp_regions=regions,
        derp_map=_derp_map_json(nm.derp_map),
        dns_config=_dns_config_json(nm.dns_config),
    )


def _dns_config_json(dc: Any) -> dict[str, Any] | None:
    """tailcfg.DNSConfig as JSON (NetworkMap.DNS in the IPN bus netmap, read by `tailscale dns status`)."""
    if dc is None:
        return None
    try:
        from engine.tailcfg import encode

        out = encode(dc)
    except Exception:  # noqa: BLE001 - a display nicety; never break status over it
        return None
    return out if isinstance(out, dict) else None


def _derp_map_json(dm: Any) -> dict[str, Any] | None:
    if dm is None:
        return None
    try:
        from engine.tailcfg import encode

        return encode(dm)
    except Exception:  # noqa: BLE001 - a display nicety; never break status over it
        return None
