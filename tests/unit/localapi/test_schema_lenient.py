"""engine.localapi.schema's lenient decoding (clients such as the GUI): odd fields get defaults, strict stays strict."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as hs

from engine.localapi.schema import (
    Decoded,
    FieldProblem,
    Notify,
    PeerStatus,
    PingResult,
    Prefs,
    SchemaError,
    State,
    Status,
    decode_lenient,
    lenient_decoding,
)

VECTORS = Path(__file__).resolve().parent / "vectors"


def vector(name: str) -> dict:
    text = (VECTORS / name).read_text()
    return json.loads(text.splitlines()[0] if name.endswith(".jsonl") else text)


CAPTURES = [
    (Status, "tailscaled-1.90.9-status-needslogin.json"),
    (Prefs, "tailscaled-1.90.9-prefs-default.json"),
    (Notify, "tailscaled-1.90.9-notify-initial.jsonl"),
]


@pytest.mark.parametrize("cls,name", CAPTURES)
def test_real_tailscaled_answers_have_no_problems_and_equal_the_strict_decode(cls, name):
    raw = vector(name)
    got = decode_lenient(cls, raw)
    assert got == Decoded(cls.from_dict(raw), ())


def test_one_odd_field_gets_its_default_and_the_rest_is_used():
    raw = vector("tailscaled-1.90.9-status-needslogin.json")
    raw["TUN"] = "yes"
    got = decode_lenient(Status, raw)
    assert got.problems == (FieldProblem(("TUN",), "want a bool, got str"),)
    assert got.value.tun is False
    assert got.value.backend_state == "NeedsLogin" and got.value.self is not None and got.value.self.host_name


def test_odd_values_deep_inside_are_reported_by_path():
    key = "nodekey:" + "1" * 64
    raw = {
        "BackendState": "Running",
        "Peer": {
            key: {"HostName": "nas", "Online": "yes", "TailscaleIPs": ["100.64.0.2", 7, "fd7a::2"]},
            "nodekey:bad": 5,
        },
        "Health": "not a list",
        "User": {"1": {"LoginName": "a@b", "ID": "one"}},
    }
    got = decode_lenient(Status, raw)
    assert [str(p) for p in got.problems] == [
        "Health: want a list, got str",
        f"Peer.{key}.TailscaleIPs.1: want a string, got int",
        f"Peer.{key}.Online: want a bool, got str",
        "Peer.nodekey:bad: want a JSON object, got int",
        "User.1.ID: want an integer, got str",
    ]
    s = got.value
    assert list(s.peer) == [key], "an element that is not an object is dropped, its siblings stay"
    assert s.peer[key] == PeerStatus(host_name="nas", online=False, tailscale_ips=["100.64.0.2", "fd7a::2"])
    assert s.health is None and s.user["1"].login_name == "a@b" and s.user["1"].id == 0
    assert s.backend_state == "Running"


@pytest.mark.parametrize("junk", [None, 5, "x", [], [{"State": 6}]], ids=repr)
def test_a_message_that_is_not_an_object_gets_all_defaults(junk):
    want = FieldProblem((), f"want a JSON object, got {type(junk).__name__}")
    assert decode_lenient(Notify, junk) == Decoded(Notify(), (want,))


def test_notify_state_leniently_by_name_never_by_bool():
    assert decode_lenient(Notify, {"State": "Running"}).value.state is State.RUNNING
    assert decode_lenient(Notify, {"State": 4}).value.state is State.STOPPED
    for bad in (True, 99, "Sleeping", 2.0):
        got = decode_lenient(Notify, {"State": bad, "BrowseToURL": "https://x/1"})
        assert got.value.state is None and got.value.browse_to_url == "https://x/1"
        assert [p.path for p in got.problems] == [("State",)]
    with pytest.raises(SchemaError):
        Notify.from_dict({"State": "Running"})  # strict: tailscaled sends a number
    with pytest.raises(SchemaError):
        Notify.from_dict({"State": True})


def test_strict_decoding_is_unchanged_outside_the_block():
    with lenient_decoding() as problems:
        assert Prefs.from_dict({"WantRunning": "yes"}) == Prefs()
    assert [str(p) for p in problems] == ["WantRunning: want a bool, got str"]
    with pytest.raises(SchemaError, match="Prefs.WantRunning: want a bool"):
        Prefs.from_dict({"WantRunning": "yes"})
    with pytest.raises(SchemaError) as e:
        Status.from_dict({"Peer": {"k": {"Online": 1}}})
    assert str(e.value) == "PeerStatus.Online: want a bool, got int" and e.value.reason == "want a bool, got int"


def test_invalid_json_text_still_raises_when_lenient():
    with lenient_decoding(), pytest.raises(SchemaError, match="invalid JSON"):
        Notify.from_json(b"{bad")
    with lenient_decoding() as problems:
        assert Notify.from_json(b'{"State": "six", "Version": "1.90.9"}').version == "1.90.9"
    assert len(problems) == 1


def test_lenient_mode_belongs_to_the_task_that_asked():
    async def strict_meanwhile(entered: asyncio.Event, done: asyncio.Event) -> str:
        await entered.wait()
        try:
            Prefs.from_dict({"CorpDNS": 1})
            return "lenient"
        except SchemaError:
            return "strict"
        finally:
            done.set()

    async def main() -> str:
        entered, done = asyncio.Event(), asyncio.Event()
        other = asyncio.ensure_future(strict_meanwhile(entered, done))
        await asyncio.sleep(0)
        with lenient_decoding():
            entered.set()
            await done.wait()
        return await other

    assert asyncio.run(main()) == "strict"


# JSON values of any shape, for the property below.
JSON = hs.recursive(
    hs.none()
    | hs.booleans()
    | hs.integers(-(2**40), 2**40)
    | hs.floats(allow_nan=False, allow_infinity=False)
    | hs.text(max_size=6),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
TYPES = [Status, Notify, Prefs, PingResult, PeerStatus]


def objects_like(cls):
    """JSON objects with the type's own keys (odd values likely) and some stray keys."""
    keys = hs.sampled_from(sorted(cls.go_to_attr())) | hs.text(max_size=4)
    return hs.dictionaries(keys, JSON, max_size=6)


@settings(max_examples=300, deadline=None)
@given(data=hs.data())
def test_lenient_never_raises_and_agrees_with_strict_when_strict_succeeds(data):
    cls = data.draw(hs.sampled_from(TYPES))
    raw = data.draw(objects_like(cls) | JSON)
    got = decode_lenient(cls, raw)
    assert isinstance(got.value, cls)
    try:
        strict = cls.from_dict(raw)
    except SchemaError:
        assert got.problems, "what strict decoding refuses is reported"
    else:
        assert got == Decoded(strict, ())
