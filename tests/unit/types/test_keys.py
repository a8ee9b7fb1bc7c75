"""Typed keys: text forms, zero keys, constant-time private comparison, no secrets in repr."""

import pytest

from engine.types.keys import (
    ChallengePublic,
    DiscoPrivate,
    DiscoPublic,
    KeyError_,
    MachinePrivate,
    MachinePublic,
    NLPrivate,
    NLPublic,
    NodePrivate,
    NodePublic,
)

HEX = "ab" * 32


@pytest.mark.parametrize(
    "cls,prefix",
    [
        (MachinePublic, "mkey:"),
        (NodePublic, "nodekey:"),
        (DiscoPublic, "discokey:"),
        (ChallengePublic, "chalpub:"),
        (NLPublic, "nlpub:"),
    ],
)
def test_public_text_round_trip(cls, prefix):
    k = cls.from_text(prefix + HEX)
    assert str(k) == prefix + HEX
    assert k.short() == "[ababa]"
    assert not k.is_zero()
    assert cls.from_text(str(k)) == k
    assert hash(cls.from_text(str(k))) == hash(k)
    zero = cls.zero()
    assert zero.is_zero()
    assert str(zero) == prefix + "0" * 64


def test_types_are_distinct():
    assert NodePublic.from_text("nodekey:" + HEX) != DiscoPublic.from_text("discokey:" + HEX)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("nodekey:" + "ab" * 31, "want 64 hex digits, got 62"),
        ("mkey:" + HEX, "missing prefix 'nodekey:'"),
        ("nodekey:" + "zz" * 32, "invalid hex"),
        (HEX, "missing prefix"),
    ],
)
def test_bad_text(text, msg):
    with pytest.raises(KeyError_) as ei:
        NodePublic.from_text(text)
    assert msg in str(ei.value)


def test_private_keys():
    k = NodePrivate.generate()
    pub = k.public()
    assert isinstance(pub, NodePublic)
    assert k.to_text().startswith("privkey:")
    assert NodePrivate.from_text(k.to_text()) == k
    assert k != NodePrivate.generate()
    secret_hex = k.raw.hex()
    assert secret_hex not in repr(k) and secret_hex not in str(k)
    assert pub.short() in repr(k)
    assert bytes(k) == k.raw
    with pytest.raises(KeyError_):
        NodePrivate.zero().public()
    assert MachinePrivate.generate().public().__class__ is MachinePublic
    assert DiscoPrivate.generate().public().__class__ is DiscoPublic
    assert NLPrivate.generate().public().__class__ is NLPublic


def test_private_not_picklable():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(NodePrivate.generate())


def test_x25519_shared_is_symmetric():
    a, b = MachinePrivate.generate(), MachinePrivate.generate()
    assert a.shared(b.public()) == b.shared(a.public())


def test_immutable():
    k = NodePublic.from_text("nodekey:" + HEX)
    with pytest.raises(AttributeError):
        k._raw = b"x"  # type: ignore[misc]
