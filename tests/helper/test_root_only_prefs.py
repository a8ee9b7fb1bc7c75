"""Attack: the operator sets the root-only OperatorUser pref (start's UpdatePrefs, PATCH prefs): 403, nothing kept."""

from __future__ import annotations

import pytest

from tests.helper.attack import counters, request_as
from tests.helper.conftest import HelperProc

pytestmark = pytest.mark.lab  # needs root: creates users, switches uid


@pytest.fixture
def operator_helper(shared_dir, make_user):
    """A helper (fake engine, prefs saved to a file) with a throwaway --operator user, and an outsider."""
    op, outsider = make_user(), make_user()
    prefs_file = shared_dir / "prefs.json"
    h = HelperProc(shared_dir, "--operator", op.name, "--prefs", str(prefs_file)).start()
    try:
        yield h, op, outsider, prefs_file
    finally:
        rc = h.stop()
        if rc not in (0, None):
            print(h.log()[-3000:])


def _operator_user(sock: str) -> str:
    got = request_as(None, sock, "GET", "/localapi/v0/prefs")
    assert got["status"] == 200, got
    return got["body"].get("OperatorUser", "")


def test_operator_cannot_change_operator_user_by_start_or_patch(operator_helper):
    h, op, outsider, prefs_file = operator_helper
    prefs = request_as(op, h.socket, "GET", "/localapi/v0/prefs")["body"]

    # 1. POST start, the whole UpdatePrefs copied, with OperatorUser handed to someone else
    evil = {**prefs, "OperatorUser": outsider.name, "WantRunning": True}
    got = request_as(op, h.socket, "POST", "/localapi/v0/start", {"UpdatePrefs": evil})
    assert got["status"] == 403, got
    assert "OperatorUser" in got["body"]["Error"] and "only root" in got["body"]["Error"]
    assert f"operator {op.name}" in got["body"]["Error"]

    # 2. PATCH prefs (MaskedPrefs)
    got = request_as(
        op, h.socket, "PATCH", "/localapi/v0/prefs", {"OperatorUser": outsider.name, "OperatorUserSet": True}
    )
    assert got["status"] == 403, got
    assert "only root" in got["body"]["Error"]

    # check-prefs says so too, without changing anything
    got = request_as(op, h.socket, "POST", "/localapi/v0/check-prefs", evil)
    assert got["status"] == 200 and "only root" in got["body"]["Error"], got

    # nothing changed, nothing persisted, the outsider gained nothing
    assert _operator_user(h.socket) == ""
    assert not prefs_file.exists() or outsider.name not in prefs_file.read_text()
    got = request_as(outsider, h.socket, "POST", "/localapi/v0/logout")
    assert got["status"] == 403, got
    c = counters(h.socket)["Counters"]
    assert c["denied_prefs"] == 2, c
    assert "Traceback" not in h.log()

    # the operator's own start works when it leaves OperatorUser alone (a whole-prefs copy, unchanged)
    got = request_as(op, h.socket, "POST", "/localapi/v0/start", {"UpdatePrefs": {**prefs, "WantRunning": True}})
    assert got["status"] == 204, got

    # root may set it; the operator's whole-prefs copy that keeps root's value is no change, so allowed
    got = request_as(
        None, h.socket, "PATCH", "/localapi/v0/prefs", {"OperatorUser": outsider.name, "OperatorUserSet": True}
    )
    assert got["status"] == 200 and got["body"]["OperatorUser"] == outsider.name, got
    assert outsider.name in prefs_file.read_text()
    now = request_as(op, h.socket, "GET", "/localapi/v0/prefs")["body"]
    got = request_as(op, h.socket, "POST", "/localapi/v0/start", {"UpdatePrefs": now})
    assert got["status"] == 204, got
    # ... but clearing it (or taking it for itself) is still root's call
    got = request_as(op, h.socket, "POST", "/localapi/v0/start", {"UpdatePrefs": {**now, "OperatorUser": op.name}})
    assert got["status"] == 403, got
    got = request_as(op, h.socket, "PATCH", "/localapi/v0/prefs", {"OperatorUser": "", "OperatorUserSet": True})
    assert got["status"] == 403, got
    assert _operator_user(h.socket) == outsider.name
    assert "Traceback" not in h.log()
