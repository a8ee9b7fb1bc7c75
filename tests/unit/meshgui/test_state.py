"""Table tests of the pure reducer (no Qt): Notify/Status JSON in, ViewState out."""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import reduce as fold

import pytest

from meshgui import state as st
from tests.gui.builders import direct, exit_option, named, notify, offline, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)
UP = st.HelperUp()


def run(*events: st.Event, now: dt.datetime = NOW) -> st.ViewState:
    return fold(lambda s, e: st.reduce(s, e, now), events, st.ViewState())


@pytest.mark.parametrize(
    "events,want",
    [
        pytest.param([], st.TrayState.HELPER_DOWN, id="initial_helper_down"),
        pytest.param([UP], st.TrayState.CONNECTING, id="up_nostate_connecting"),
        pytest.param([st.NotifyEvent(notify(State=2))], st.TrayState.NEEDS_LOGIN, id="notify_needs_login"),
        pytest.param([st.NotifyEvent(notify(State=3))], st.TrayState.NEEDS_APPROVAL, id="needs_machine_auth"),
        pytest.param([st.NotifyEvent(notify(State=4))], st.TrayState.STOPPED, id="stopped"),
        pytest.param([st.NotifyEvent(notify(State=5))], st.TrayState.CONNECTING, id="starting"),
        pytest.param([st.NotifyEvent(notify(State=6))], st.TrayState.CONNECTED, id="running"),
        pytest.param([st.NotifyEvent(notify(State=1))], st.TrayState.ERROR, id="in_use_other_user"),
        pytest.param([st.StatusEvent(status("Running"))], st.TrayState.CONNECTED, id="status_running"),
        pytest.param([st.StatusEvent(status("NeedsLogin"))], st.TrayState.NEEDS_LOGIN, id="status_needs_login"),
        pytest.param(
            [st.NotifyEvent(notify(State=6, Prefs=prefs(ExitNodeID="n1CNTRL")))],
            st.TrayState.EXIT_NODE,
            id="running_with_exit_node",
        ),
        pytest.param(
            [st.StatusEvent(status("Running", exit_node="n1CNTRL"))],
            st.TrayState.EXIT_NODE,
            id="status_exit_node_status",
        ),
        pytest.param(
            [st.NotifyEvent(notify(State=6)), st.HelperDown("gone")],
            st.TrayState.HELPER_DOWN,
            id="helper_down_after_running",
        ),
        pytest.param(
            [st.StatusEvent(status("Running", key_expiry="2026-09-01T11:00:00Z"))],
            st.TrayState.NEEDS_LOGIN,
            id="expired_key_never_connected",
        ),
        pytest.param(
            [st.StatusEvent(status("Running", key_expiry="2026-09-01T13:00:00Z"))],
            st.TrayState.CONNECTED,
            id="expiring_key_still_connected",
        ),
    ],
)
def test_tray_state(events, want):
    assert run(*events).tray is want


def test_status_fields():
    s = run(
        st.StatusEvent(
            status(
                "Running", [peer(1, direct()), peer(2), peer(3, offline)], key_expiry="2026-09-01T20:00:00.123456789Z"
            )
        )
    )
    assert s.self_node.name == "laptop"
    assert s.self_node.ips == ("100.64.0.1", "fd7a:115c:a1e0::1")  # IPv4 first
    assert s.self_node.dns_name == "laptop.tail1234.ts.net"
    assert s.account == "alice@example.com" and s.account_display == "Alice"
    assert s.tailnet == "alice@example.com"
    assert s.key_expiring_soon and not s.key_expired
    assert s.self_node.key_expiry == dt.datetime(2026, 9, 1, 20, 0, 0, 123456, tzinfo=dt.timezone.utc)
    p1, p2, p3 = s.peers
    assert (p1.name, p1.path, p1.path_detail) == ("host1", st.PathKind.DIRECT, "203.0.113.7:41641")
    assert (p2.path, p2.path_detail, p2.path_text) == (st.PathKind.DERP, "fra", "relay fra")
    assert (p3.online, p3.path, p3.path_text) == (False, st.PathKind.UNKNOWN, "offline")
    assert p1.ipv4 == "100.64.0.2" and p1.user == "alice@example.com"


def test_peers_sorted_online_first_then_name():
    s = run(
        st.StatusEvent(
            status("Running", [peer(1, named("zed")), peer(2, named("bob"), offline), peer(3, named("Amy"))])
        )
    )
    assert [p.name for p in s.peers] == ["Amy", "zed", "bob"]


def test_ping_sets_latency_and_path_and_survives_status_refresh():
    s = run(st.StatusEvent(status("Running", [peer(1)])))
    s = st.reduce(s, st.PingEvent("100.64.0.2", {"LatencySeconds": 0.041, "DERPRegionCode": "fra"}), NOW)
    assert s.peers[0].path_text == "relay fra 41 ms"
    s = st.reduce(s, st.PingEvent("100.64.0.2", {"LatencySeconds": 0.003, "Endpoint": "203.0.113.7:41641"}), NOW)
    assert s.peers[0].path_text == "direct 3 ms"
    s = st.reduce(s, st.StatusEvent(status("Running", [peer(1)])), NOW)  # status only knows the home DERP
    assert s.peers[0].path_text == "direct 3 ms"
    s = st.reduce(s, st.PingEvent("100.64.0.2", {"Err": "timeout"}), NOW)
    assert s.peers[0].latency_ms is None


def test_ping_for_unknown_ip_is_ignored():
    s = run(st.StatusEvent(status("Running", [peer(1)])))
    assert st.reduce(s, st.PingEvent("100.99.9.9", {"LatencySeconds": 1}), NOW) == s


def test_exit_nodes():
    s = run(
        st.StatusEvent(status("Running", [peer(1, exit_option), peer(2), peer(3, exit_option, offline)])),
        st.PrefsEvent(prefs(ExitNodeID="n3CNTRL", ExitNodeAllowLANAccess=True)),
    )
    assert [p.id for p in s.exit_options] == ["n1CNTRL", "n3CNTRL"]
    assert s.exit_node.id == "n3CNTRL" and s.exit_node_offline and s.allow_lan
    assert s.tray is st.TrayState.EXIT_NODE


def test_browser_login_flow():
    s = run(st.NotifyEvent(notify(State=2)))
    s = st.reduce(s, st.NotifyEvent(notify(BrowseToURL="https://login.example/a/1")), NOW)
    assert s.browse_url == "", "a BrowseToURL nobody asked for is not opened"
    s = st.reduce(s, st.LoginStarted(), NOW)
    s = st.reduce(s, st.NotifyEvent(notify(BrowseToURL="https://login.example/a/2")), NOW)
    assert s.login_pending and s.browse_url == "https://login.example/a/2"
    s = st.reduce(s, st.NotifyEvent(notify(State=5)), NOW)
    assert not s.login_pending and s.browse_url == ""
    s = st.reduce(s, st.NotifyEvent(notify(State=6)), NOW)
    assert s.tray is st.TrayState.CONNECTED


def test_login_cancel():
    s = run(
        st.NotifyEvent(notify(State=2)),
        st.LoginStarted(),
        st.NotifyEvent(notify(BrowseToURL="https://x/1")),
        st.LoginCancelled(),
    )
    assert not s.login_pending and not s.browse_url and s.tray is st.TrayState.NEEDS_LOGIN


def test_access_denied_is_sticky_read_only():
    s = run(st.NotifyEvent(notify(State=6)), st.AccessDenied("denied"))
    assert s.read_only and s.tray is st.TrayState.CONNECTED


def test_err_message_and_health():
    s = run(
        st.NotifyEvent(notify(ErrMessage="boom")),
        st.StatusEvent(status("Running", health=["Unable to connect to the coordination server"])),
    )
    assert s.error == "boom" and s.control_unreachable


@pytest.mark.parametrize(
    "junk",
    [
        None,
        42,
        "x",
        [],
        {"State": "six"},
        {"State": 99},
        {"State": True},
        {"Prefs": "no"},
        {"Prefs": {"WantRunning": "yes", "ExitNodeID": 5}},
        {"BrowseToURL": 7},
    ],
    ids=repr,
)
def test_malformed_notify_changes_nothing_but_liveness(junk):
    base = run(UP)
    got = st.reduce(base, st.NotifyEvent(junk), NOW)
    assert dataclasses.replace(got, version=base.version) == base


@pytest.mark.parametrize(
    "junk",
    [
        {"Peer": {"k": "notadict"}},
        {"Peer": [1, 2]},
        {"Self": None, "User": None},
        {"Peer": {"k": {"TailscaleIPs": "1.2.3.4", "Online": "yes", "RxBytes": "9", "LastHandshake": "garbage"}}},
    ],
    ids=repr,
)
def test_malformed_status_never_raises(junk):
    s = run(st.StatusEvent(junk))
    assert s.helper_running
    for p in s.peers:
        assert p.ips == () and p.online is False and p.rx_bytes == 0 and p.last_handshake is None


def test_sharee_nodes_hidden():
    key, p = peer(1)
    p["ShareeNode"] = True
    assert run(st.StatusEvent(status("Running", [(key, p)]))).peers == ()
