"""Tray menu contents for each tray state: the pure spec, and the QMenu the Tray builds from it (offscreen)."""

from __future__ import annotations

import datetime as dt
from functools import reduce as fold

import pytest

from meshgui import menu, state as st
from tests.gui.builders import direct, exit_option, named, notify, offline, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)


def view(*events: st.Event) -> st.ViewState:
    return fold(lambda s, e: st.reduce(s, e, NOW), events, st.ViewState())


def texts(items) -> list:
    out = []
    for it in items:
        if it.separator:
            out.append("---")
        elif it.children:
            out.append([it.text, texts(it.children)])
        else:
            out.append(it.text)
    return out


def actions(items) -> set[str]:
    return {it.action for it in menu.walk(items) if it.action}


PEERS = [
    peer(1, named("nas"), direct(), exit_option),
    peer(2, named("phone")),
    peer(3, named("old"), offline),
    peer(4, named("exit-fra"), exit_option),
]
RUNNING = st.StatusEvent(status("Running", PEERS))
TAIL = ["---", "Open meshvpn…", "Preferences…", "About meshvpn", "Quit"]

STATES = {
    "helper_down": view(st.HelperDown("")),
    "needs_login": view(st.StatusEvent(status("NeedsLogin")), st.PrefsEvent(prefs(ControlURL=""))),
    "waiting_browser": view(
        st.StatusEvent(status("NeedsLogin")),
        st.LoginStarted(),
        st.NotifyEvent(notify(BrowseToURL="https://login.example/a/xyz")),
    ),
    "needs_approval": view(st.StatusEvent(status("NeedsMachineAuth"))),
    "stopped": view(st.StatusEvent(status("Stopped"))),
    "connecting": view(st.StatusEvent(status("Starting"))),
    "connected": view(RUNNING, st.PrefsEvent(prefs())),
    "exit_node": view(RUNNING, st.PrefsEvent(prefs(ExitNodeID="n1CNTRL", ExitNodeAllowLANAccess=True))),
    "key_expired": view(st.StatusEvent(status("Running", PEERS, key_expiry="2026-09-01T10:00:00Z"))),
    "read_only": view(RUNNING, st.AccessDenied("denied")),
}


def test_helper_down_menu():
    assert texts(menu.build(STATES["helper_down"], now=NOW)) == [
        "VPN helper not running",
        "---",
        "Start the VPN helper",
        *TAIL,
    ]


def test_helper_down_menu_shows_error_detail():
    t = texts(menu.build(view(st.HelperDown("helper closed the connection during /localapi/v0/status")), now=NOW))
    assert t[:2] == ["VPN helper not running", "helper closed the connection during /localapi/v0/status"]


def test_needs_login_menu_is_one_clear_item():
    items = menu.build(STATES["needs_login"], now=NOW)
    assert texts(items) == ["Logged out", "---", "Log in…", "Server: controlplane.tailscale.com", *TAIL]


def test_waiting_for_browser_menu():
    items = menu.build(STATES["waiting_browser"], now=NOW)
    assert texts(items) == [
        "Waiting for browser login…",
        "---",
        "Open the login page again",
        "Copy the login link",
        "Cancel login",
        "Server: controlplane.tailscale.com",
        *TAIL,
    ]
    assert "cancel_login" in actions(items)


def test_needs_approval_menu():
    t = texts(menu.build(STATES["needs_approval"], now=NOW))
    assert t[0] == "Waiting for an administrator to approve this device"
    assert t[2][0] == "Account: alice@example.com"


def test_stopped_menu_offers_connect():
    t = texts(menu.build(STATES["stopped"], now=NOW))
    assert t[:3] == ["Disconnected", "---", "Connect"]
    assert t[4][0] == "Account: alice@example.com"
    assert t[5] == [
        "This device: laptop (100.64.0.1)",
        ["Copy name: laptop.tail1234.ts.net", "Copy 100.64.0.1", "Copy fd7a:115c:a1e0::1"],
    ]


def test_connecting_menu():
    assert texts(menu.build(STATES["connecting"], now=NOW))[:3] == ["Connecting…", "---", "Disconnect"]


def test_connected_menu_full():
    items = menu.build(STATES["connected"], now=NOW)
    t = texts(items)
    assert t[0] == "Connected to alice@example.com"
    assert t[2] == "Disconnect"
    account, this_dev, devices, exits = t[4], t[5], t[6], t[7]
    assert account == [
        "Account: alice@example.com",
        [
            "Signed in as alice@example.com (Alice)",
            "Server: controlplane.tailscale.com",
            "---",
            "Reauthenticate…",
            "Log out",
        ],
    ]
    assert this_dev[0] == "This device: laptop (100.64.0.1)"
    assert devices == [
        "Network devices (3 online)",
        [
            "exit-fra  100.64.0.5  — relay fra",
            "nas  100.64.0.2  — direct",
            "phone  100.64.0.3  — relay fra",
            "old  100.64.0.4  — offline",
        ],
    ]
    assert exits == ["Exit node: none", ["None", "exit-fra", "nas", "---", "Allow local network access"]]
    none_item = next(i for i in menu.walk(items) if i.text == "None")
    assert none_item.checkable and none_item.checked
    copy_nas = next(i for i in menu.walk(items) if i.text.startswith("nas "))
    assert (copy_nas.action, copy_nas.arg) == ("copy", "100.64.0.2")
    assert t[-5:] == TAIL


def test_exit_node_menu_checks_current_and_lan():
    items = menu.build(STATES["exit_node"], now=NOW)
    t = texts(items)
    assert t[0] == "Connected to alice@example.com · exit node nas"
    nas = next(i for i in menu.walk(items) if i.action == "set_exit_node" and i.arg == "n1CNTRL")
    none = next(i for i in menu.walk(items) if i.action == "set_exit_node" and i.arg == "")
    lan = next(i for i in menu.walk(items) if i.action == "allow_lan")
    assert nas.checked and not none.checked and lan.checked and lan.arg is False
    assert t[7][0] == "Exit node: nas"


def test_key_expired_asks_to_log_in_again():
    t = texts(menu.build(STATES["key_expired"], now=NOW))
    assert t[:3] == ["Log in again to stay connected", "---", "Log in again…"]


def test_key_expiring_soon_shows_reauthenticate_with_expiry():
    s = view(st.StatusEvent(status("Running", PEERS, key_expiry="2026-09-01T17:00:00Z")))
    account = texts(menu.build(s, now=NOW))[4]
    assert "Key expires in 5 h" in account[1]
    assert "Reauthenticate… (key expires soon)" in account[1]
    assert "key expires soon" in menu.tooltip(s)


def test_read_only_menu_explains_once_and_offers_no_controls():
    items = menu.build(STATES["read_only"], now=NOW, user="bob")
    explain = [i for i in menu.walk(items) if "Read-only" in i.text]
    assert len(explain) == 1 and "sudo meshctl set --operator=bob" in explain[0].text
    assert actions(items) <= {"copy", "open_window", "about", "quit"}


def test_exit_node_offline_headline():
    s = view(RUNNING, st.PrefsEvent(prefs(ExitNodeID="n3CNTRL")))
    assert menu.headline(s).endswith("exit node old (offline)")


def test_control_unreachable_line():
    s = view(st.StatusEvent(status("Running", health=["Unable to connect to the coordination server"])))
    assert "Coordination server unreachable — existing connections keep working" in texts(menu.build(s, now=NOW))


def test_many_peers_capped_with_window_link():
    many = [peer(i) for i in range(100)]
    t = texts(menu.build(view(st.StatusEvent(status("Running", many))), now=NOW))
    devices = t[6]
    assert len(devices[1]) == menu.MAX_MENU_PEERS + 2 and devices[1][-1] == "All 100 devices…"


@pytest.mark.parametrize("name", sorted(STATES))
def test_qt_tray_menu_matches_spec(qtbot, name):
    """The QMenu the Tray builds has exactly the spec's texts, for every state."""
    from meshgui.tray import Tray

    tray = Tray(clock=lambda: NOW)
    tray.apply(STATES[name])
    assert tray.menu_texts() == texts(menu.build(STATES[name], now=NOW))
    assert not tray.icon.icon().isNull()


def test_qt_tray_rebuilds_only_on_change_and_routes_actions(qtbot):
    from meshgui.tray import Tray

    tray = Tray(clock=lambda: NOW)
    tray.apply(STATES["connected"])
    tray.apply(STATES["connected"])
    assert tray.rebuilds == 1
    got = []
    tray.actionTriggered.connect(lambda a, g: got.append((a, g)))
    for act in tray.menu.actions():
        if act.text() == "Disconnect":
            act.trigger()
    assert got == [("disconnect", "")]


def test_qt_tray_updates_in_place_when_only_texts_change(qtbot):
    """Latency/path updates must not clear the menu (it may be open under the user's pointer)."""
    from meshgui.tray import Tray

    tray = Tray(clock=lambda: NOW)
    s = STATES["connected"]
    tray.apply(s)
    s2 = st.reduce(s, st.PingEvent("100.64.0.3", {"LatencySeconds": 0.041, "DERPRegionCode": "fra"}), NOW)
    tray.apply(s2)
    assert (tray.rebuilds, tray.in_place_updates) == (1, 1)
    assert tray.menu_texts() == texts(menu.build(s2, now=NOW))
    got = []
    tray.actionTriggered.connect(lambda a, g: got.append((a, g)))
    devices = next(a.menu() for a in tray.menu.actions() if a.text().startswith("Network devices"))
    phone = next(a for a in devices.actions() if a.text().startswith("phone"))
    assert phone.text() == "phone  100.64.0.3  — relay fra 41 ms"
    phone.trigger()
    assert got == [("copy", "100.64.0.3")]
    # A structural change (logout) rebuilds.
    tray.apply(STATES["needs_login"])
    assert tray.rebuilds == 2
