"""Main window (offscreen): peer table by diff, search, details, exit node picker and copy actions."""

from __future__ import annotations

import datetime as dt
from functools import reduce as fold

from meshgui import state as st
from meshgui.window import MainWindow
from tests.gui.builders import direct, exit_option, named, offline, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)
PEERS = [
    peer(1, named("nas"), direct(), exit_option),
    peer(2, named("phone")),
    peer(3, named("old"), offline),
    peer(4, named("exit-fra"), exit_option),
]


def view(*events):
    return fold(lambda s, e: st.reduce(s, e, NOW), events, st.ViewState())


def make(qtbot) -> MainWindow:
    w = MainWindow(clock=lambda: NOW)
    qtbot.addWidget(w)
    return w


def test_table_search_details_and_actions(qtbot):
    w = make(qtbot)
    w.apply(view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs())))
    assert w.proxy.rowCount() == 4 and w.status_label.text() == "Connected to alice@example.com"
    assert w.primary.text() == "Disconnect"
    w.search.setText("pho")
    assert w.proxy.rowCount() == 1
    w.search.setText("")
    got = []
    w.actionRequested.connect(lambda a, g: got.append((a, g)))
    w.select_peer("nodekey:" + f"{1:064x}")
    assert w.detail_title.text() == "nas" and w.fields["Path"].text() == "direct (203.0.113.7:41641)"
    assert w.fields["Exit node"].text() == "offered" and w.use_exit.isEnabled()
    w.copy_ip.click()
    w.copy_dns.click()
    w.use_exit.click()
    assert got == [("copy", "100.64.0.2"), ("copy", "nas.tail1234.ts.net"), ("set_exit_node", "n1CNTRL")]


def test_exit_picker_lists_options_and_emits(qtbot):
    w = make(qtbot)
    w.apply(view(st.StatusEvent(status("Running", PEERS)), st.PrefsEvent(prefs(ExitNodeID="n4CNTRL"))))
    items = [w.exit_combo.itemText(i) for i in range(w.exit_combo.count())]
    assert items == ["None", "exit-fra", "nas"] and w.exit_combo.currentText() == "exit-fra"
    got = []
    w.actionRequested.connect(lambda a, g: got.append((a, g)))
    w.exit_combo.activated.emit(0)
    w.allow_lan.click()
    assert got == [("set_exit_node", ""), ("allow_lan", True)]


def test_selection_survives_updates_and_removal(qtbot):
    w = make(qtbot)
    w.apply(view(st.StatusEvent(status("Running", PEERS))))
    w.select_peer("nodekey:" + f"{2:064x}")
    w.apply(
        view(
            st.StatusEvent(status("Running", PEERS)),
            st.PingEvent("100.64.0.3", {"LatencySeconds": 0.02, "DERPRegionCode": "fra"}),
        )
    )
    assert w.fields["Latency"].text() == "20.0 ms" and w.detail_title.text() == "phone"
    w.apply(view(st.StatusEvent(status("Running", PEERS[:1]))))
    assert w.detail_title.text() in ("Select a device", "nas")  # never the removed peer


def test_read_only_and_login_buttons(qtbot):
    w = make(qtbot)
    w.apply(view(st.StatusEvent(status("NeedsLogin"))))
    assert w.primary.text() == "Log in…"
    w.apply(view(st.StatusEvent(status("Running")), st.AccessDenied("no")))
    assert w.primary.isHidden() and "Read-only" in w.banner.text() and not w.exit_combo.isEnabled()
