"""Seed mutator (pytest seed run, benchmarks/fuzz.py): byte flips, truncations, splices, length and JSON edits."""

from __future__ import annotations

import json
import random

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
_INTERESTING16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 16, 32, 48, 1280, 65535)
_TOKENS = (
    b"\x00",
    b"\xff",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"=",
    b"&",
    b"%",
    b"%00",
    b"..",
    b"/",
    b":",
    b"[",
    b"]",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b'"',
    b"\\u0000",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"9" * 25,
    b"[" * 2000,
    b'{"a":' * 1500,
)
_JSON_VALUES = (
    None,
    True,
    False,
    0,
    -1,
    1 << 64,
    1.5,
    "",
    "x",
    "default",
    "52",
    [],
    {},
    [[]],
    {"": None},
    "100.64.0.1",
    "fd7a::1",
    "::",
    "meshvpn0",
    "/etc/resolv.conf",
    "\x00",
    "a" * 300,
)


def _json_edit(rnd: random.Random, data: bytes) -> bytes | None:
    """Parse `data` as JSON (or JSON lines), swap one value for a value of another type, re-encode; None if not JSON."""
    try:
        lines = [json.loads(ln) for ln in data.splitlines() if ln.strip()]
    except (ValueError, RecursionError):
        return None
    if not lines:
        return None
    nodes: list[tuple[object, object]] = []  # (container, key)

    def walk(v: object, depth: int) -> None:
        if depth > 20:
            return
        if isinstance(v, dict):
            for k in list(v):
                nodes.append((v, k))
                walk(v[k], depth + 1)
        elif isinstance(v, list):
            for i in range(len(v)):
                nodes.append((v, i))
                walk(v[i], depth + 1)

    for ln in lines:
        walk(ln, 0)
    if not nodes:
        return None
    cont, key = rnd.choice(nodes)
    op = rnd.random()
    if op < 0.7:
        cont[key] = rnd.choice(_JSON_VALUES)  # type: ignore[index]
    elif op < 0.85 and isinstance(cont, dict):
        del cont[key]
    else:
        cont[key] = [cont[key]] if rnd.random() < 0.5 else {"k": cont[key]}  # type: ignore[index]
    return b"\n".join(json.dumps(ln).encode() for ln in lines)


def mutate(rnd: random.Random, data: bytes, corpus: list[bytes], max_len: int = 1 << 16) -> bytes:
    """One to four random edits of `data`; `corpus` supplies splice partners."""
    if rnd.random() < 0.15:
        j = _json_edit(rnd, data)
        if j is not None:
            return j
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(10)
        n = len(b)
        if op == 0 and n:  # flip bits
            b[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:  # random byte
            b[rnd.randrange(n)] = rnd.randrange(256)
        elif op == 2 and n:  # interesting byte
            b[rnd.randrange(n)] = rnd.choice(_INTERESTING)
        elif op == 3 and n >= 2:  # length-field edit: a 16-bit big- or little-endian field
            i = rnd.randrange(n - 1)
            v = (
                rnd.choice(_INTERESTING16)
                if rnd.random() < 0.6
                else (int.from_bytes(b[i : i + 2], "big") + rnd.randint(-4, 4)) & 0xFFFF
            )
            b[i : i + 2] = v.to_bytes(2, rnd.choice(("big", "little")))
        elif op == 4:  # truncate
            del b[rnd.randint(0, n) :]
        elif op == 5 and n:  # delete a span
            i = rnd.randrange(n)
            del b[i : i + rnd.randint(1, 16)]
        elif op == 6:  # insert random bytes
            i = rnd.randint(0, n)
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 7:  # insert a token
            i = rnd.randint(0, n)
            b[i:i] = rnd.choice(_TOKENS)
        elif op == 8 and corpus:  # splice with another seed
            other = rnd.choice(corpus)
            i, j = rnd.randint(0, n), rnd.randint(0, len(other))
            b = b[:i] + other[j:] if rnd.random() < 0.5 else bytearray(other[:j]) + b[i:]
        elif op == 9 and n:  # duplicate a span
            i = rnd.randrange(n)
            j = rnd.randint(i, min(n, i + 64))
            b[j:j] = b[i:j] * rnd.randint(1, 4)
    return bytes(b[:max_len])
