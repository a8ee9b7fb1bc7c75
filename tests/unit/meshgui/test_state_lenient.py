"""One odd field never costs the GUI a message: a Status/Notify with one wrong-typed value still gives a usable view.

The messages are decoded as EngineClient decodes them (schema.decode_lenient), then reduced.
"""

from __future__ import annotations

import copy
import datetime as dt
from functools import reduce as fold
from typing import Any, Iterator

import pytest
from hypothesis import given, settings, strategies as hs

from engine.localapi.schema import Notify, Prefs, State, Status, decode_lenient
from meshgui import state as st
from tests.gui.builders import direct, exit_option, named, notify, peer, prefs, status

NOW = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.timezone.utc)
STATUS = status(
    "Running",
    [peer(1, named("nas"), exit_option, direct()), peer(2, named("phone"))],
    key_expiry="2026-09-03T12:00:00Z",
    exit_node="n1CNTRL",
    health=["DNS is slow"],
    self_allowed_ips=["100.64.0.1/32"],
    self_primary_routes=[],
)
NOTIFY = notify(
    State=6,
    Prefs=prefs(CorpDNS=False, RouteAll=True, ExitNodeID="n1CNTRL", AdvertiseRoutes=["10.0.0.0/24"]),
    Engine={"RBytes": 5, "WBytes": 6},
    ErrMessage="control is slow",
)
# One value of each JSON kind; a field gets every one of a kind other than its own.
WRONG = [None, True, 7, 2.5, "x", [1, "a"], {"k": 1}]
PREFS_VIEW = (
    "want_running",
    "logged_out",
    "allow_lan",
    "corp_dns",
    "route_all",
    "shields_up",
    "control_url",
    "exit_node_id",
    "advertise_routes",
)
CONNECTED = (st.TrayState.CONNECTED, st.TrayState.EXIT_NODE)


def run(*events: st.Event) -> st.ViewState:
    return fold(lambda s, e: st.reduce(s, e, NOW), events, st.ViewState())


def paths(v: Any, at: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every value's path in a JSON document (object keys and list indexes), the document itself excepted."""
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        yield at + (str(k),)
        yield from paths(x, at + (str(k),))


def get(v: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        v = v[int(k)] if isinstance(v, list) else v[k]
    return v


def replaced(doc: dict, path: tuple[str, ...], value: Any) -> dict:
    out = copy.deepcopy(doc)
    parent = get(out, path[:-1])
    parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = value
    return out


def kind(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return "null" if v is None else "bool"
    return "number" if isinstance(v, (int, float)) else type(v).__name__


def wrong_for(doc: dict, path: tuple[str, ...]) -> list[Any]:
    """The WRONG values of another kind than the value at `path` (null is a string's zero value, as in Go)."""
    right = get(doc, path)
    return [w for w in WRONG if kind(w) != kind(right) and not (w is None and isinstance(right, str))]


def status_event(doc: Any) -> st.StatusEvent:
    return st.StatusEvent(decode_lenient(Status, doc))


def notify_event(doc: Any) -> st.NotifyEvent:
    return st.NotifyEvent(decode_lenient(Notify, doc))


BEFORE_STATUS = run(st.HelperUp(), st.NotifyEvent(notify(State=6)))
GOOD_STATUS = st.reduce(BEFORE_STATUS, status_event(STATUS), NOW)


def test_the_good_messages_are_what_the_tables_expect():
    assert GOOD_STATUS.tray is st.TrayState.EXIT_NODE and len(GOOD_STATUS.peers) == 2
    assert GOOD_STATUS.account == "alice@example.com" and GOOD_STATUS.health == ("DNS is slow",)
    good = st.reduce(BEFORE_NOTIFY, notify_event(NOTIFY), NOW)
    assert (good.corp_dns, good.route_all, good.advertise_routes) == (False, True, ("10.0.0.0/24",))


@pytest.mark.parametrize("path", list(paths(STATUS)), ids=".".join)
def test_status_with_one_wrong_typed_value_is_shown_with_everything_else(path):
    for wrong in wrong_for(STATUS, path):
        decoded = decode_lenient(Status, replaced(STATUS, path, wrong))
        s = st.reduce(BEFORE_STATUS, st.StatusEvent(decoded), NOW)
        what = f"{'.'.join(path)} = {wrong!r}"
        assert s.helper_running and s.tray in CONNECTED, what
        assert s.backend_state is State.RUNNING, what
        top = path[0]
        if top != "Version":  # (an unreadable Version keeps the one shown before; JSON null reads as "")
            assert s.version == GOOD_STATUS.version, what
        if top not in ("Peer", "User"):
            assert s.peers == GOOD_STATUS.peers, what
        elif top == "Peer" and len(path) > 2:  # inside one peer: the other one is untouched, and still listed
            by_key = {p.key: p for p in s.peers}
            assert by_key.keys() == {p.key for p in GOOD_STATUS.peers}, what
            assert [p for p in GOOD_STATUS.peers if p.key != path[1]] == [
                by_key[p.key] for p in GOOD_STATUS.peers if p.key != path[1]
            ], what
        if top not in ("Self", "TailscaleIPs"):
            assert s.self_node == GOOD_STATUS.self_node, what
        if top not in ("Self", "User"):
            assert (s.account, s.account_display) == (GOOD_STATUS.account, GOOD_STATUS.account_display), what
        if top != "CurrentTailnet":
            assert s.tailnet == GOOD_STATUS.tailnet, what
        if top != "Health":
            assert s.health == GOOD_STATUS.health, what


BEFORE_NOTIFY = run(st.HelperUp(), st.StatusEvent(STATUS), st.PrefsEvent(prefs(ExitNodeID="n1CNTRL")))
GOOD_NOTIFY = st.reduce(BEFORE_NOTIFY, notify_event(NOTIFY), NOW)


@pytest.mark.parametrize("path", list(paths(NOTIFY)), ids=".".join)
def test_notify_with_one_wrong_typed_value_is_applied_but_for_that_value(path):
    for wrong in wrong_for(NOTIFY, path):
        s = st.reduce(BEFORE_NOTIFY, notify_event(replaced(NOTIFY, path, wrong)), NOW)
        what = f"{'.'.join(path)} = {wrong!r}"
        assert s.helper_running and s.tray in CONNECTED and len(s.peers) == 2, what
        if path[0] != "State":
            assert s.backend_state is GOOD_NOTIFY.backend_state, what
        if path[0] != "ErrMessage":
            assert s.error == GOOD_NOTIFY.error, what
        changed = [a for a in PREFS_VIEW if getattr(s, a) != getattr(GOOD_NOTIFY, a)]
        if path[0] != "Prefs":
            assert not changed, what
        elif len(path) == 1:  # no usable prefs at all: the view keeps the ones it had
            assert all(getattr(s, a) == getattr(BEFORE_NOTIFY, a) for a in PREFS_VIEW), what
        elif len(path) == 2:  # one unreadable pref: the view keeps that one, takes all the others
            assert len(changed) <= 1 and all(getattr(s, a) == getattr(BEFORE_NOTIFY, a) for a in changed), what
        else:  # a bad element of a list pref: only that pref differs
            assert len(changed) <= 1, what


# Any JSON value at all, put anywhere in a message.
JSON = hs.recursive(
    hs.none()
    | hs.booleans()
    | hs.integers(-(2**40), 2**40)
    | hs.floats(allow_nan=False, allow_infinity=False)
    | hs.text(max_size=8),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(path=hs.sampled_from(list(paths(STATUS))), value=JSON)
def test_status_with_any_value_anywhere_keeps_the_helper_up(path, value):
    s = st.reduce(BEFORE_STATUS, status_event(replaced(STATUS, path, value)), NOW)
    assert s.helper_running and s.tray is not st.TrayState.HELPER_DOWN
    assert s.backend_state is State.RUNNING


@settings(max_examples=300, deadline=None)
@given(path=hs.sampled_from(list(paths(NOTIFY))), value=JSON)
def test_notify_with_any_value_anywhere_keeps_the_helper_up(path, value):
    s = st.reduce(BEFORE_NOTIFY, notify_event(replaced(NOTIFY, path, value)), NOW)
    assert s.helper_running and s.tray is not st.TrayState.HELPER_DOWN and len(s.peers) == 2


@pytest.mark.parametrize("junk", [None, 3, "x", [NOTIFY]], ids=repr)
def test_a_message_that_is_not_an_object_changes_nothing(junk):
    assert st.reduce(BEFORE_NOTIFY, notify_event(junk), NOW) == BEFORE_NOTIFY
    assert st.reduce(BEFORE_NOTIFY, status_event(junk), NOW) == BEFORE_NOTIFY
    assert st.reduce(BEFORE_NOTIFY, st.PrefsEvent(decode_lenient(Prefs, junk)), NOW) == BEFORE_NOTIFY
