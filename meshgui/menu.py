"""Pure tray-menu specification from a ViewState (no Qt): one builder per top-level tray state.

The tray turns the returned `MenuItem` tree into a QMenu; tests read the tree directly.
Submenus go at most one level deep (GNOME's dbusmenu renders deeper levels badly).
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from dataclasses import dataclass

from engine.localapi.schema import DEFAULT_CONTROL_URL, State
from meshgui.state import Approval, PeerView, TrayState, ViewState

MAX_MENU_PEERS = 40  # more devices than this go to the window ("All devices…")


@dataclass(frozen=True)
class MenuItem:
    """One menu entry: an action (`action`, `arg`), a disabled label, a separator or a submenu."""

    text: str = ""
    action: str = ""  # "" = label (disabled) unless children or separator
    arg: str | bool = ""
    enabled: bool = True
    checkable: bool = False
    checked: bool = False
    separator: bool = False
    tooltip: str = ""
    children: tuple["MenuItem", ...] = ()

    @property
    def is_label(self) -> bool:
        return not self.action and not self.children and not self.separator


SEP = MenuItem(separator=True)


def label(text: str, tooltip: str = "") -> MenuItem:
    return MenuItem(text=text, enabled=False, tooltip=tooltip)


def headline(s: ViewState) -> str:
    """The first menu line, also the tooltip's first line."""
    t = s.tray
    if t is TrayState.HELPER_DOWN:
        return "VPN helper not running"
    if t is TrayState.ERROR:
        return "VPN in use by another user" if s.backend_state is State.IN_USE_OTHER_USER else "VPN error"
    if t is TrayState.NEEDS_LOGIN:
        if s.key_expired:
            return "Log in again to stay connected"
        return "Waiting for browser login…" if s.login_pending else "Logged out"
    if t is TrayState.NEEDS_APPROVAL:
        return "Waiting for an administrator to approve this device"
    if t is TrayState.STOPPED:
        return "Disconnected"
    if t is TrayState.CONNECTING:
        return "Connecting…"
    where = f"Connected to {s.tailnet}" if s.tailnet else "Connected"
    if t is TrayState.EXIT_NODE:
        node = s.exit_node
        name = node.name if node else s.exit_node_id
        return f"{where} · exit node {name}" + (" (offline)" if s.exit_node_offline else "")
    return where


def tooltip(s: ViewState) -> str:
    lines = ["meshvpn", headline(s)]
    if s.self_node.ips and s.tray in (TrayState.CONNECTED, TrayState.EXIT_NODE):
        lines.append(f"{s.self_node.name} {s.self_node.ips[0]}")
    if s.key_expiring_soon:
        lines.append("Log in again to stay connected (key expires soon)")
    return "\n".join(lines)


def build(s: ViewState, *, now: dt.datetime, user: str = "") -> tuple[MenuItem, ...]:
    """The whole tray menu for `s`."""
    user = user or os.environ.get("USER", "you")
    head = [label(headline(s))]
    if s.error and s.tray is not TrayState.HELPER_DOWN:
        head.append(label(_short(s.error)))
    if s.control_unreachable and s.tray in (TrayState.CONNECTED, TrayState.EXIT_NODE, TrayState.CONNECTING):
        head.append(label("Coordination server unreachable — existing connections keep working"))
    tail = [
        SEP,
        MenuItem("Open meshvpn…", "open_window"),
        MenuItem("Preferences…", "preferences"),
        MenuItem("About meshvpn", "about"),
        MenuItem("Quit", "quit"),
    ]
    if s.read_only and s.helper_running:
        return tuple(
            head
            + _read_only(s, user)
            + [
                SEP,
                MenuItem("Open meshvpn…", "open_window"),
                MenuItem("About meshvpn", "about"),
                MenuItem("Quit", "quit"),
            ]
        )
    body = _BUILDERS[s.tray](s, now)
    return tuple(head + body + tail)


def _read_only(s: ViewState, user: str) -> list[MenuItem]:
    items = [
        SEP,
        MenuItem(
            f"Read-only: {user} may not control the VPN on this computer. "
            "Ask an administrator to run “sudo meshctl set --operator=" + user + "” (click to copy)",
            "copy",
            f"sudo meshctl set --operator={user}",
            tooltip="The helper accepts changes only from root and the operator user.",
        ),
    ]
    if s.self_node.name:
        items += [SEP, _this_device(s)]
    return items


def _helper_down(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    items = []
    if s.error and s.error != headline(s):
        items.append(label(_short(s.error)))
    return items + [SEP, MenuItem("Start the VPN helper", "start_helper")]


def _error(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    return [SEP, MenuItem("Log out", "logout")]


def _needs_login(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    server = label(f"Server: {_host(s.control_url)}")
    if s.login_pending:
        items = [SEP]
        if s.browse_url:
            items.append(MenuItem("Open the login page again", "open_url", s.browse_url, tooltip=s.browse_url))
            items.append(MenuItem("Copy the login link", "copy", s.browse_url))
        items.append(MenuItem("Cancel login", "cancel_login"))
        return items + [server]
    text = "Log in again…" if s.key_expired else "Log in…"
    return [SEP, MenuItem(text, "login"), server]


def _needs_approval(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    return [SEP, _account(s, now), _this_device(s)]


def _stopped(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    return [SEP, MenuItem("Connect", "connect"), SEP, _account(s, now), _this_device(s), _network_settings(s)]


def _connecting(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    return [SEP, MenuItem("Disconnect", "disconnect"), SEP, _account(s, now), _this_device(s)]


def _connected(s: ViewState, now: dt.datetime) -> list[MenuItem]:
    return [
        SEP,
        MenuItem("Disconnect", "disconnect"),
        SEP,
        _account(s, now),
        _this_device(s),
        _devices(s),
        _exit_nodes(s),
        _network_settings(s),
    ]


_BUILDERS = {
    TrayState.HELPER_DOWN: _helper_down,
    TrayState.ERROR: _error,
    TrayState.NEEDS_LOGIN: _needs_login,
    TrayState.NEEDS_APPROVAL: _needs_approval,
    TrayState.STOPPED: _stopped,
    TrayState.CONNECTING: _connecting,
    TrayState.CONNECTED: _connected,
    TrayState.EXIT_NODE: _connected,
}


def _account(s: ViewState, now: dt.datetime) -> MenuItem:
    who = s.account or "unknown user"
    kids = [
        label(f"Signed in as {who}" + (f" ({s.account_display})" if s.account_display else "")),
        label(f"Server: {_host(s.control_url)}"),
    ]
    exp = s.self_node.key_expiry
    if exp is not None:
        kids.append(label(("Key expired " if s.key_expired else "Key expires ") + _when(exp, now)))
    reauth = "Reauthenticate…" + (" (key expires soon)" if s.key_expiring_soon else "")
    kids += [SEP, MenuItem(reauth, "login"), MenuItem("Log out", "logout")]
    return MenuItem(text=f"Account: {who}", children=tuple(kids))


def _this_device(s: ViewState) -> MenuItem:
    me = s.self_node
    first = me.ips[0] if me.ips else "no address"
    kids = [MenuItem(f"Copy name: {me.dns_name or me.name}", "copy", me.dns_name or me.name)]
    kids += [MenuItem(f"Copy {ip}", "copy", ip) for ip in me.ips]
    return MenuItem(text=f"This device: {me.name} ({first})", children=tuple(kids))


def peer_line(p: PeerView) -> str:
    ip = p.ipv4 or (p.ips[0] if p.ips else "")
    if not p.online:
        return f"{p.name}  {ip}  — offline"
    return f"{p.name}  {ip}  — {p.path_text}"


def _devices(s: ViewState) -> MenuItem:
    if not s.peers:
        return MenuItem(text="Network devices", children=(label("No other devices"),))
    kids = [
        MenuItem(
            peer_line(p),
            "copy",
            p.ipv4 or (p.ips[0] if p.ips else p.name),
            tooltip=f"{p.dns_name or p.name}: click copies the IP address",
        )
        for p in s.peers[:MAX_MENU_PEERS]
    ]
    if len(s.peers) > MAX_MENU_PEERS:
        kids += [SEP, MenuItem(f"All {len(s.peers)} devices…", "open_window")]
    online = sum(p.online for p in s.peers)
    return MenuItem(text=f"Network devices ({online} online)", children=tuple(kids))


def _exit_nodes(s: ViewState) -> MenuItem:
    kids = [MenuItem("None", "set_exit_node", "", checkable=True, checked=not s.exit_node_id)]
    options = sorted(s.exit_options, key=lambda p: (not p.online, p.name.lower()))
    # The engine refuses to use an exit node while offering one: say so here instead of failing on click.
    offering = s.advertises_exit_node and not s.exit_node_id
    busy = "This device runs as an exit node: turn off Network settings → Run as exit node first."
    for p in options:
        kids.append(
            MenuItem(
                p.name + ("" if p.online else " (offline)"),
                "set_exit_node",
                p.id,
                checkable=True,
                checked=p.id == s.exit_node_id,
                enabled=not offering,
                tooltip=busy if offering else "",
            )
        )
    if not options:
        kids.append(label("No exit nodes offered"))
    elif offering:
        kids.append(label("(not while this device is an exit node)", busy))
    kids += [
        SEP,
        MenuItem("Allow local network access", "allow_lan", not s.allow_lan, checkable=True, checked=s.allow_lan),
    ]
    current = s.exit_node
    title = "Exit node: " + (current.name if current else (s.exit_node_id or "none"))
    return MenuItem(text=title, children=tuple(kids))


# Texts of the "Run as exit node" status line, by approval state (see ViewState.exit_node_approval).
EXIT_APPROVAL_TEXT = {
    Approval.APPROVED: "Offering this device as an exit node",
    Approval.PENDING: "Needs the tailnet admin's approval",
    Approval.UNKNOWN: "(the admin must approve it)",
}


def _network_settings(s: ViewState) -> MenuItem:
    """This device's network prefs (tailscale's "Use Tailscale DNS settings", "Use Tailscale subnets", ...)."""
    using_exit = bool(s.exit_node_id)
    kids = [
        MenuItem(
            "Use tailnet DNS",
            "set_corp_dns",
            not s.corp_dns,
            checkable=True,
            checked=s.corp_dns,
            tooltip="Resolve tailnet names (MagicDNS) and use the DNS servers the tailnet admin set",
        ),
        MenuItem(
            "Use subnet routes",
            "set_route_all",
            not s.route_all,
            checkable=True,
            checked=s.route_all,
            tooltip="Reach the subnets other devices of the tailnet offer",
        ),
        MenuItem(
            "Allow incoming connections",
            "set_allow_incoming",
            not s.allow_incoming,
            checkable=True,
            checked=s.allow_incoming,
            tooltip="Off: other devices cannot open connections to this one (shields up)",
        ),
        SEP,
        MenuItem(
            "Run as exit node" + (" (not while using one)" if using_exit and not s.advertises_exit_node else ""),
            "set_advertise_exit_node",
            not s.advertises_exit_node,
            checkable=True,
            checked=s.advertises_exit_node,
            enabled=s.advertises_exit_node or not using_exit,
            tooltip=(
                "Stop using an exit node first"
                if using_exit and not s.advertises_exit_node
                else "Offer this device's internet connection to the tailnet (the admin must approve it)"
            ),
        ),
    ]
    if s.advertises_exit_node:
        kids.append(label(EXIT_APPROVAL_TEXT[s.exit_node_approval]))
    return MenuItem(text="Network settings", children=tuple(kids))


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url or DEFAULT_CONTROL_URL).netloc or url


def _when(t: dt.datetime, now: dt.datetime) -> str:
    secs = (t - now).total_seconds()
    span = abs(secs)
    if span < 3600:
        amount = f"{max(1, int(span // 60))} min"
    elif span < 86400 * 2:
        amount = f"{int(span // 3600)} h"
    else:
        amount = f"{int(span // 86400)} days"
    return f"in {amount}" if secs > 0 else f"{amount} ago"


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def walk(items: tuple[MenuItem, ...]):
    """Every item in the tree, depth first (for tests and lookups)."""
    for it in items:
        yield it
        yield from walk(it.children)
