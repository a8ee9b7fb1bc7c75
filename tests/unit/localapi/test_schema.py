"""LocalAPI wire types: byte-compatible with tailscaled 1.90.9 captures; round trips; prefs masking."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from engine.localapi.schema import (
    GO_ZERO_TIME,
    MaskedPrefs,
    Notify,
    Options,
    PeerStatus,
    PingResult,
    Prefs,
    SchemaError,
    State,
    Status,
    UserProfile,
)

VECTORS = Path(__file__).parent / "vectors"


def load(name: str):
    return json.loads(
        (VECTORS / name).read_text().splitlines()[0] if name.endswith(".jsonl") else (VECTORS / name).read_text()
    )


@pytest.mark.parametrize(
    "cls,name",
    [
        (Status, "tailscaled-1.90.9-status-needslogin.json"),
        (Prefs, "tailscaled-1.90.9-prefs-default.json"),
        (Notify, "tailscaled-1.90.9-notify-initial.jsonl"),
    ],
)
def test_tailscaled_capture_round_trips_exactly(cls, name):
    raw = load(name)
    obj = cls.from_dict(raw)
    assert obj.to_dict() == raw
    assert list(obj.to_dict()) == list(raw)  # same key order as Go's encoder


def test_default_prefs_match_tailscaled_newprefs_except_logged_out():
    raw = load("tailscaled-1.90.9-prefs-default.json")
    assert Prefs(logged_out=True).to_dict() == raw


def test_notify_state_is_a_number_and_decodes_to_enum():
    n = Notify.from_dict(load("tailscaled-1.90.9-notify-initial.jsonl"))
    assert n.state is State.NEEDS_LOGIN
    assert n.prefs is not None and n.prefs.corp_dns is True
    assert json.loads(Notify(version="x", state=State.RUNNING).to_json())["State"] == 6


def test_unknown_keys_survive_a_round_trip():
    raw = load("tailscaled-1.90.9-prefs-default.json")
    raw["SomethingNew"] = {"a": [1, 2]}
    p = Prefs.from_dict(raw)
    assert p.extra == {"SomethingNew": {"a": [1, 2]}}
    assert p.to_dict()["SomethingNew"] == {"a": [1, 2]}


def test_omitempty_fields_are_left_out():
    d = PeerStatus().to_dict()
    for k in ("AltSharerUserID", "AllowedIPs", "Tags", "KeyExpiry", "Location", "Expired", "sshHostKeys"):
        assert k not in d
    assert d["Created"] == GO_ZERO_TIME
    assert d["PublicKey"].startswith("nodekey:") and len(d["PublicKey"]) == 8 + 64
    assert PingResult(ip="1.2.3.4").to_dict().keys() >= {"IP", "Err", "LatencySeconds", "DERPRegionCode"}


@pytest.mark.parametrize(
    "bad,msg",
    [
        ({"WantRunning": "yes"}, "Prefs.WantRunning: want a bool"),
        ({"NetfilterMode": "on"}, "Prefs.NetfilterMode: want an integer"),
        ({"AdvertiseRoutes": "10.0.0.0/8"}, "Prefs.AdvertiseRoutes: want a list"),
        ([], "Prefs: want a JSON object"),
    ],
)
def test_wrong_types_are_named(bad, msg):
    with pytest.raises(SchemaError) as ei:
        Prefs.from_dict(bad)
    assert str(ei.value).startswith(msg)


def test_invalid_json_is_a_schema_error():
    with pytest.raises(SchemaError, match="invalid JSON"):
        Status.from_json(b"{nope")


# ---- MaskedPrefs ----


def test_masked_prefs_wire_form_is_flat_with_set_flags():
    mp = MaskedPrefs.of(want_running=False, exit_node_id="n3")
    d = mp.to_dict()
    assert d["WantRunningSet"] is True and d["ExitNodeIDSet"] is True
    assert d["WantRunning"] is False and d["ExitNodeID"] == "n3"
    assert "HostnameSet" not in d
    assert MaskedPrefs.from_dict(d) == mp


def test_masked_prefs_as_the_tailscale_cli_sends_them():
    # `tailscale down` sends {"WantRunning":false, ..., "WantRunningSet":true} plus every Prefs key
    d = Prefs().to_dict()
    d.update({"WantRunningSet": True, "AutoUpdateSet": {}})
    mp = MaskedPrefs.from_dict(d)
    assert mp.set_fields == {"WantRunning"}
    base = Prefs(want_running=True, hostname="keep", corp_dns=False)
    after = mp.apply_to(base)
    assert after.want_running is False and after.hostname == "keep" and after.corp_dns is False


def test_masked_nested_autoupdate():
    d = {"AutoUpdate": {"Check": False, "Apply": True}, "AutoUpdateSet": {"ApplySet": True}}
    mp = MaskedPrefs.from_dict(d)
    assert mp.set_fields == {"AutoUpdate.Apply"}
    out = mp.apply_to(Prefs())
    assert out.auto_update.apply is True and out.auto_update.check is True  # Check not in mask
    assert MaskedPrefs.from_dict(mp.to_dict()).set_fields == mp.set_fields


@pytest.mark.parametrize("bad", [{"BogusSet": True}, {"WantRunningSet": "true"}, {"AutoUpdateSet": {"XSet": True}}])
def test_masked_prefs_rejects_unknown_or_mistyped_masks(bad):
    with pytest.raises(SchemaError):
        MaskedPrefs.from_dict(bad)


def test_empty_mask_changes_nothing():
    base = Prefs(hostname="h", want_running=True)
    assert MaskedPrefs.from_dict(Prefs().to_dict()).apply_to(base) == base


_pref_values = {
    "want_running": st.booleans(),
    "route_all": st.booleans(),
    "corp_dns": st.booleans(),
    "hostname": st.text(alphabet="abcdefgh-0123", max_size=12),
    "exit_node_id": st.text(alphabet="nCNTRL0123456789", max_size=10),
    "exit_node_ip": st.sampled_from(["", "100.64.0.3", "fd7a:115c:a1e0::3"]),
    "advertise_routes": st.one_of(
        st.none(), st.lists(st.sampled_from(["10.0.0.0/8", "0.0.0.0/0", "::/0"]), max_size=3)
    ),
    "shields_up": st.booleans(),
    "exit_node_allow_lan_access": st.booleans(),
    "control_url": st.sampled_from(["", "https://hs.example.com", "http://127.0.0.1:8080"]),
    "operator_user": st.sampled_from(["", "alice"]),
}


@given(base=st.fixed_dictionaries({}, optional=_pref_values), edit=st.fixed_dictionaries({}, optional=_pref_values))
def test_masking_applies_exactly_the_masked_fields(base, edit):
    b = Prefs(**base)
    mp = MaskedPrefs.of(**edit)
    out = mp.apply_to(b)
    for f in dataclasses.fields(Prefs):
        if f.name == "extra":
            continue
        want = edit[f.name] if f.name in edit else getattr(b, f.name)
        assert getattr(out, f.name) == want, f.name
    # and the wire form round-trips
    assert MaskedPrefs.from_json(mp.to_json()) == mp
    assert Prefs.from_json(out.to_json()) == out


@given(
    st.builds(
        PeerStatus,
        id=st.text(max_size=8),
        host_name=st.text(max_size=8),
        online=st.booleans(),
        tailscale_ips=st.one_of(st.none(), st.lists(st.sampled_from(["100.64.0.1", "fd7a::1"]), max_size=2)),
        rx_bytes=st.integers(0, 2**62),
        key_expiry=st.one_of(st.none(), st.just("2027-01-01T00:00:00Z")),
    )
)
def test_peer_status_round_trip(ps):
    st_ = Status(
        backend_state="Running", self=ps, peer={ps.public_key: ps}, user={"7": UserProfile(id=7, login_name="a@b")}
    )
    assert Status.from_json(st_.to_json()) == st_


def test_options_repr_hides_auth_key():
    o = Options(auth_key="tskey-secret-123", update_prefs=Prefs())
    assert "tskey-secret" not in repr(o)
    assert Options.from_json(o.to_json()).auth_key == "tskey-secret-123"


def test_set_keys_request_names_and_aliases():
    from engine.localapi.schema import SetKeysRequest

    a = SetKeysRequest.from_dict({"MachineKey": "privkey:" + "1" * 64, "NodeKey": "privkey:" + "2" * 64})
    b = SetKeysRequest.from_dict({"MachinePrivate": "privkey:" + "1" * 64, "NodePrivate": "privkey:" + "2" * 64})
    assert a == b and a.to_dict() == {"MachineKey": "privkey:" + "1" * 64, "NodeKey": "privkey:" + "2" * 64}
    assert "privkey" not in repr(a)
