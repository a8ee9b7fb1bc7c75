"""Notifications: only important transitions, never repeated by flapping (pure)."""

from __future__ import annotations

import datetime as dt
from functools import reduce as fold

from meshgui import notifications as nt, state as st
from tests.gui.builders import exit_option, named, offline, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)


def view(*events):
    return fold(lambda s, e: st.reduce(s, e, NOW), events, st.ViewState())


def test_login_completion_says_connected_as_user():
    before = view(st.StatusEvent(status("NeedsLogin")), st.LoginStarted())
    after = st.reduce(before, st.StatusEvent(status("Running")), NOW)
    assert nt.transitions(before, after) == [("Connected", "Connected to alice@example.com as alice@example.com")]


def test_steady_state_and_peer_churn_are_silent():
    a = view(st.StatusEvent(status("Running", [peer(1)])))
    b = st.reduce(a, st.StatusEvent(status("Running", [peer(1), peer(2)])), NOW)
    assert nt.transitions(a, a) == [] and nt.transitions(a, b) == []


def test_startup_into_running_is_silent():
    assert nt.transitions(st.ViewState(), view(st.StatusEvent(status("Running")))) == []


def test_exit_node_going_offline_once():
    up = view(
        st.StatusEvent(status("Running", [peer(1, named("nas"), exit_option)])),
        st.PrefsEvent(prefs(ExitNodeID="n1CNTRL")),
    )
    down = st.reduce(up, st.StatusEvent(status("Running", [peer(1, named("nas"), exit_option, offline)])), NOW)
    notes = nt.transitions(up, down)
    assert len(notes) == 1 and notes[0][0] == "Exit node offline" and "nas" in notes[0][1]
    assert nt.transitions(down, down) == []


def test_helper_crash_and_key_expiry_and_control_unreachable():
    run = view(st.StatusEvent(status("Running")))
    assert [t for t, _ in nt.transitions(run, st.reduce(run, st.HelperDown(""), NOW))] == ["VPN helper stopped"]
    soon = st.reduce(run, st.StatusEvent(status("Running", key_expiry="2026-09-01T18:00:00Z")), NOW)
    assert [t for t, _ in nt.transitions(run, soon)] == ["Log in again soon"]
    gone = st.reduce(run, st.StatusEvent(status("Running", key_expiry="2026-09-01T11:00:00Z")), NOW)
    assert [t for t, _ in nt.transitions(soon, gone)] == ["Log in again"]
    cu = st.reduce(run, st.StatusEvent(status("Running", health=["Unable to connect to the coordination server"])), NOW)
    assert [t for t, _ in nt.transitions(run, cu)] == ["Coordination server unreachable"]


def test_deduper_suppresses_flapping():
    d = nt.Deduper(repeat_after=300)
    note = ("Exit node offline", "x")
    assert d.admit(note, 0.0) and not d.admit(note, 10.0) and not d.admit(note, 299.0) and d.admit(note, 301.0)
    assert d.admit(("other", "y"), 11.0)
