"""Network settings (CorpDNS, RouteAll, ShieldsUp, exit-node advertising): reducer, tray menu spec, QMenu and window."""

from __future__ import annotations

import datetime as dt
from functools import reduce as fold

import pytest

from meshgui import menu, state as st
from tests.gui.builders import exit_option, named, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)
PEERS = [peer(1, named("nas"), exit_option), peer(2, named("phone"))]
EXIT = ["0.0.0.0/0", "::/0"]
SELF_ADDRS = ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]


def view(*events: st.Event) -> st.ViewState:
    return fold(lambda s, e: st.reduce(s, e, NOW), events, st.ViewState())


def settings_menu(s: st.ViewState, user: str = "alice") -> menu.MenuItem | None:
    return next((i for i in menu.build(s, now=NOW, user=user) if i.text == "Network settings"), None)


def rows(item: menu.MenuItem) -> list[tuple]:
    """(text, action, arg, checked, enabled) per child; '---' for separators."""
    return ["---" if c.separator else (c.text, c.action, c.arg, c.checked, c.enabled) for c in item.children]


# ---------------------------------------------------------------- reducer


def test_defaults_before_any_prefs_are_tailscales():
    s = st.ViewState()
    assert (s.corp_dns, s.route_all, s.shields_up, s.advertise_routes) == (True, False, False, ())
    assert s.allow_incoming and not s.advertises_exit_node


@pytest.mark.parametrize(
    "p,want",
    [
        pytest.param(prefs(), (True, False, False, ()), id="defaults"),
        pytest.param(
            prefs(CorpDNS=False, RouteAll=True, ShieldsUp=True, AdvertiseRoutes=["10.0.0.0/24"]),
            (False, True, True, ("10.0.0.0/24",)),
            id="all_changed",
        ),
        pytest.param(
            prefs(AdvertiseRoutes=["10.0.0.0/24", *EXIT]),
            (True, False, False, ("10.0.0.0/24", *EXIT)),
            id="exit_routes",
        ),
    ],
)
def test_prefs_reduce_network_settings(p, want):
    s = view(st.PrefsEvent(p))
    assert (s.corp_dns, s.route_all, s.shields_up, s.advertise_routes) == want


def test_prefs_on_the_bus_update_and_null_routes_clear():
    s = view(st.NotifyEvent({"Prefs": prefs(ShieldsUp=True, AdvertiseRoutes=EXIT)}))
    assert not s.allow_incoming and s.advertises_exit_node
    s = st.reduce(s, st.NotifyEvent({"Prefs": prefs(AdvertiseRoutes=None)}), NOW)
    assert s.advertise_routes == () and not s.advertises_exit_node


@pytest.mark.parametrize(
    "junk",
    [
        {"CorpDNS": "yes"},
        {"RouteAll": 1},
        {"ShieldsUp": None},
        {"AdvertiseRoutes": "0.0.0.0/0"},
        {"AdvertiseRoutes": {"a": 1}},
    ],
)
def test_malformed_prefs_change_nothing(junk):
    base = view(st.PrefsEvent(prefs(CorpDNS=False, RouteAll=True, AdvertiseRoutes=EXIT)))
    assert st.reduce(base, st.PrefsEvent(junk), NOW) == base


def test_only_one_exit_route_is_not_an_exit_node():
    assert not view(st.PrefsEvent(prefs(AdvertiseRoutes=["0.0.0.0/0"]))).advertises_exit_node


@pytest.mark.parametrize(
    "allowed,primary,want",
    [
        pytest.param(None, None, st.Approval.UNKNOWN, id="status_silent"),
        pytest.param(SELF_ADDRS, None, st.Approval.PENDING, id="not_yet_approved"),
        pytest.param(SELF_ADDRS + ["0.0.0.0/0"], None, st.Approval.PENDING, id="half_approved"),
        pytest.param(SELF_ADDRS + EXIT, None, st.Approval.APPROVED, id="in_allowed_ips"),
        pytest.param(None, EXIT, st.Approval.APPROVED, id="in_primary_routes"),
        pytest.param([], [], st.Approval.PENDING, id="empty_lists"),
    ],
)
def test_exit_node_approval_from_self_status(allowed, primary, want):
    s = view(st.StatusEvent(status("Running", self_allowed_ips=allowed, self_primary_routes=primary)))
    assert s.exit_node_approval is want


# ---------------------------------------------------------------- menu spec


def test_connected_menu_has_network_settings_last_before_the_tail():
    s = view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs()))
    items = menu.build(s, now=NOW)
    i = [it.text for it in items].index("Network settings")
    assert items[i - 1].text.startswith("Exit node:") and items[i + 1].separator
    assert rows(items[i]) == [
        ("Use tailnet DNS", "set_corp_dns", False, True, True),
        ("Use subnet routes", "set_route_all", True, False, True),
        ("Allow incoming connections", "set_allow_incoming", False, True, True),
        "---",
        ("Run as exit node", "set_advertise_exit_node", True, False, True),
    ]
    assert all(c.checkable for c in items[i].children if not c.separator)


def test_every_toggle_arg_is_the_new_value():
    s = view(
        st.StatusEvent(status("Running", PEERS)),
        st.PrefsEvent(prefs(CorpDNS=False, RouteAll=True, ShieldsUp=True, AdvertiseRoutes=EXIT)),
    )
    got = {c.action: (c.checked, c.arg) for c in settings_menu(s).children if c.action}
    assert got == {
        "set_corp_dns": (False, True),
        "set_route_all": (True, False),
        "set_allow_incoming": (False, True),
        "set_advertise_exit_node": (True, False),
    }


def test_stopped_menu_has_network_settings():
    s = view(st.StatusEvent(status("Stopped")), st.PrefsEvent(prefs(WantRunning=False, RouteAll=True)))
    item = settings_menu(s)
    assert item is not None
    assert next(c for c in item.children if c.action == "set_route_all").checked


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([st.HelperDown("")], id="helper_down"),
        pytest.param([st.StatusEvent(status("NeedsLogin"))], id="needs_login"),
        pytest.param([st.StatusEvent(status("NeedsMachineAuth"))], id="needs_approval"),
        pytest.param([st.StatusEvent(status("Running", PEERS)), st.AccessDenied("denied")], id="read_only"),
        pytest.param([st.StatusEvent(status("Stopped")), st.AccessDenied("denied")], id="read_only_stopped"),
    ],
)
def test_no_network_settings_when_logged_out_or_read_only(events):
    assert settings_menu(view(*events)) is None


@pytest.mark.parametrize(
    "allowed,primary,line",
    [
        pytest.param(None, None, "(the admin must approve it)", id="unknown"),
        pytest.param(SELF_ADDRS, None, "Needs the tailnet admin's approval", id="pending"),
        pytest.param(SELF_ADDRS + EXIT, None, "Offering this device as an exit node", id="approved"),
    ],
)
def test_run_as_exit_node_says_whether_the_admin_approved(allowed, primary, line):
    s = view(
        st.StatusEvent(status("Running", PEERS, self_allowed_ips=allowed, self_primary_routes=primary)),
        st.PrefsEvent(prefs(AdvertiseRoutes=["192.168.1.0/24", *EXIT])),
    )
    kids = settings_menu(s).children
    run = next(c for c in kids if c.action == "set_advertise_exit_node")
    assert run.checked and run.arg is False
    assert kids[-1].is_label and kids[-1].text == line


def test_no_approval_line_when_not_advertising():
    s = view(st.StatusEvent(status("Running", PEERS, self_allowed_ips=SELF_ADDRS)), st.PrefsEvent(prefs()))
    assert not any(c.is_label for c in settings_menu(s).children)


def test_run_as_exit_node_disabled_while_using_an_exit_node():
    s = view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs(ExitNodeID="n1CNTRL")))
    run = next(c for c in settings_menu(s).children if c.action == "set_advertise_exit_node")
    assert not run.enabled and run.text == "Run as exit node (not while using one)"
    assert "Stop using an exit node first" in run.tooltip


# ---------------------------------------------------------------- Qt: tray and window (offscreen)


def test_qt_tray_submenu_checks_follow_prefs_in_place(qtbot):
    from meshgui.tray import Tray

    tray = Tray(clock=lambda: NOW)
    s = view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs()))
    tray.apply(s)
    sub = next(a.menu() for a in tray.menu.actions() if a.text() == "Network settings")
    acts = {a.text(): a for a in sub.actions() if not a.isSeparator()}
    assert {t: (a.isCheckable(), a.isChecked()) for t, a in acts.items()} == {
        "Use tailnet DNS": (True, True),
        "Use subnet routes": (True, False),
        "Allow incoming connections": (True, True),
        "Run as exit node": (True, False),
    }
    got = []
    tray.actionTriggered.connect(lambda a, g: got.append((a, g)))
    acts["Use subnet routes"].trigger()
    assert got == [("set_route_all", True)]
    # the click does not tick it: the helper may refuse; the tick follows the prefs that come back
    assert not acts["Use subnet routes"].isChecked()
    tray.apply(st.reduce(s, st.PrefsEvent(prefs(RouteAll=True, ShieldsUp=True)), NOW))
    assert (tray.rebuilds, tray.in_place_updates) == (1, 1)
    assert acts["Use subnet routes"].isChecked() and not acts["Allow incoming connections"].isChecked()


def test_qt_window_toggles_emit_actions_and_show_approval(qtbot):
    from meshgui.window import MainWindow

    w = MainWindow(clock=lambda: NOW)
    qtbot.addWidget(w)
    s = view(
        st.StatusEvent(status("Running", PEERS, self_allowed_ips=SELF_ADDRS)),
        st.PrefsEvent(prefs(AdvertiseRoutes=EXIT, ShieldsUp=True)),
    )
    w.apply(s)
    w.show()
    boxes = w.net_boxes
    assert [
        boxes[a].isChecked() for a in ("set_corp_dns", "set_route_all", "set_allow_incoming", "set_advertise_exit_node")
    ] == [True, False, False, True]
    assert w.exit_approval.isVisible()
    assert w.exit_approval.text() == "Needs the tailnet admin's approval"
    got = []
    w.actionRequested.connect(lambda a, g: got.append((a, g)))
    boxes["set_corp_dns"].click()
    boxes["set_allow_incoming"].click()
    assert got == [("set_corp_dns", False), ("set_allow_incoming", True)]
    assert boxes["set_corp_dns"].isChecked(), "the box shows the helper's value until its prefs change"
    w.apply(st.reduce(s, st.PrefsEvent(prefs(CorpDNS=False, AdvertiseRoutes=EXIT)), NOW))
    assert not boxes["set_corp_dns"].isChecked()
    w.apply(st.reduce(s, st.AccessDenied("no"), NOW))
    assert not any(b.isVisible() for b in boxes.values())


def test_exit_node_picker_disabled_while_this_device_is_an_exit_node():
    """The engine refuses using and offering an exit node at once: the picker says so instead of failing on click."""

    def picker(s):
        return next(i for i in menu.build(s, now=NOW) if i.text.startswith("Exit node"))

    offering = view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs(AdvertiseRoutes=EXIT)))
    kids = picker(offering).children
    nas = next(c for c in kids if c.text.startswith("nas"))
    assert not nas.enabled and "Run as exit node" in nas.tooltip
    assert any(c.is_label and "not while this device is an exit node" in c.text for c in kids)
    assert next(c for c in kids if c.text == "None").enabled  # "None" is always fine
    normal = view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs()))
    assert next(c for c in picker(normal).children if c.text.startswith("nas")).enabled
