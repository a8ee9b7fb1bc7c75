"""JSON codec for tailcfg wire dataclasses: Go field names, unknown fields ignored, None omitted.

A wire class is a frozen dataclass whose fields carry ``metadata={"go": "GoName"}`` (see
``go()``). Decoding matches JSON keys exactly first and then case-insensitively (as Go's
encoding/json does), ignores unknown keys, and maps JSON ``null`` to ``None`` (for fields
whose default is ``None``: in the Tailscale protocol ``nil`` usually means "unchanged").
Encoding emits the Go names and omits fields whose value is ``None``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

from engine.types.keys import KeyError_, _PublicKey


class WireError(ValueError):
    """A JSON document does not fit the expected wire type (names the field)."""


def go(name: str, **kw: Any) -> Any:
    """Field marker: ``x: int = go("X")`` / ``go("X", default=...)``."""
    default = kw.pop("default", None)
    factory = kw.pop("default_factory", None)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"go": name})
    return dataclasses.field(default=default, metadata={"go": name})


Decoder = Callable[[Any, str], Any]
Encoder = Callable[[Any], Any]


def _dec_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise WireError(f"{where}: want integer, got {type(v).__name__}")
    return v


def _dec_str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise WireError(f"{where}: want string, got {type(v).__name__}")
    return v


def _dec_bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"{where}: want bool, got {type(v).__name__}")
    return v


def _dec_float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise WireError(f"{where}: want number, got {type(v).__name__}")
    return float(v)


def _dec_any(v: Any, where: str) -> Any:
    return v


def _make_key_dec(cls: type[_PublicKey]) -> Decoder:
    def dec(v: Any, where: str) -> Any:
        if not isinstance(v, str):
            raise WireError(f"{where}: want key string, got {type(v).__name__}")
        if v == "":
            return cls.zero()
        try:
            return cls.from_text(v)
        except KeyError_ as e:
            raise WireError(f"{where}: {e}") from None

    return dec


def _decoder_for(tp: Any) -> tuple[Decoder, Encoder]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return _dec_any, _ident
        inner_dec, inner_enc = _decoder_for(args[0])

        def dec_opt(v: Any, where: str) -> Any:
            return None if v is None else inner_dec(v, where)

        return dec_opt, inner_enc
    if origin is list or origin is tuple:
        (elem,) = typing.get_args(tp)[:1]
        edec, eenc = _decoder_for(elem)

        def dec_list(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, list):
                raise WireError(f"{where}: want array, got {type(v).__name__}")
            return tuple(edec(x, f"{where}[{i}]") for i, x in enumerate(v))

        def enc_list(v: Any) -> Any:
            return [eenc(x) for x in v]

        return dec_list, enc_list
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        vdec, venc = _decoder_for(vtp)
        int_keys = ktp is int

        def dec_dict(v: Any, where: str) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise WireError(f"{where}: want object, got {type(v).__name__}")
            out = {}
            for k, x in v.items():
                kk: Any = k
                if int_keys:
                    try:
                        kk = int(k)
                    except ValueError:
                        raise WireError(f"{where}: want integer key, got {k!r}") from None
                out[kk] = vdec(x, f"{where}[{k}]")
            return out

        def enc_dict(v: Any) -> Any:
            return {str(k): venc(x) for k, x in v.items()}

        return dec_dict, enc_dict
    if tp is int:
        return _dec_int, _ident
    if tp is str:
        return _dec_str, _ident
    if tp is bool:
        return _dec_bool, _ident
    if tp is float:
        return _dec_float, _ident
    if isinstance(tp, type) and issubclass(tp, _PublicKey):
        return _make_key_dec(tp), str
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return (lambda v, where, _tp=tp: None if v is None else decode(_tp, v, where)), encode
    return _dec_any, _ident


def _ident(v: Any) -> Any:
    return v


class _Spec:
    __slots__ = ("exact", "lower", "fields")

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        self.exact: dict[str, tuple[str, Decoder]] = {}
        self.lower: dict[str, tuple[str, Decoder]] = {}
        self.fields: list[tuple[str, str, Encoder]] = []
        for f in dataclasses.fields(cls):
            name = f.metadata.get("go")
            if name is None:
                continue
            dec, enc = _decoder_for(hints[f.name])
            self.exact[name] = (f.name, dec)
            self.lower[name.lower()] = (f.name, dec)
            self.fields.append((f.name, name, enc))


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    s = _SPECS.get(cls)
    if s is None:
        s = _SPECS[cls] = _Spec(cls)
    return s


T = typing.TypeVar("T")


def decode(cls: type[T], obj: Any, where: str | None = None) -> T:
    """Build ``cls`` from a parsed JSON object; unknown keys are ignored."""
    where = where or cls.__name__
    if not isinstance(obj, dict):
        raise WireError(f"{where}: want object, got {type(obj).__name__}")
    spec = _spec(cls)
    kw: dict[str, Any] = {}
    for k, v in obj.items():
        ent = spec.exact.get(k)
        if ent is None:
            ent = spec.lower.get(k.lower())
            if ent is None:
                continue
        attr, dec = ent
        if v is None:
            continue  # null: keep the default (None = unchanged / absent)
        kw[attr] = dec(v, f"{where}.{k}")
    return cls(**kw)


def encode(obj: Any) -> dict[str, Any]:
    """JSON-ready dict with Go field names; None-valued fields are omitted."""
    out: dict[str, Any] = {}
    for attr, name, enc in _spec(type(obj)).fields:
        v = getattr(obj, attr)
        if v is None:
            continue
        out[name] = enc(v)
    return out
