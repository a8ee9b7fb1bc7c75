"""Replay window: the Linux kernel's numbered cases (as ported in wireguard-go) and reordering."""

from __future__ import annotations

import random

import pytest

from engine.wg.constants import REJECT_AFTER_MESSAGES
from engine.wg.replay import WINDOW_SIZE, ReplayFilter

T_LIM = WINDOW_SIZE + 1
R = REJECT_AFTER_MESSAGES

# (counter, expected) in order; the comment numbers match the kernel's selftest
KERNEL_CASES = [
    (0, True),
    (1, True),
    (1, False),
    (9, True),
    (8, True),
    (7, True),
    (7, False),  # 1-7
    (T_LIM, True),
    (T_LIM - 1, True),
    (T_LIM - 1, False),
    (T_LIM - 2, True),  # 8-11
    (2, True),
    (2, False),
    (T_LIM + 16, True),
    (3, False),
    (T_LIM + 16, False),  # 12-16
    (T_LIM * 4, True),
    (T_LIM * 4 - (T_LIM - 1), True),
    (10, False),  # 17-19
    (T_LIM * 4 - T_LIM, False),
    (T_LIM * 4 - (T_LIM + 1), False),  # 20-21
    (T_LIM * 4 - (T_LIM - 2), True),
    (T_LIM * 4 + 1 - T_LIM, False),
    (0, False),  # 22-24
    (R, False),
    (R - 1, True),
    (R, False),
    (R - 1, False),
    (R - 2, True),  # 25-29
    (R + 1, False),
    (R + 2, False),
    (R - 2, False),
    (R - 3, True),
    (0, False),  # 30-34
]


def test_window_size_is_8128():
    assert WINDOW_SIZE == 8128


def test_kernel_numbered_cases():
    f = ReplayFilter()
    for number, (counter, expected) in enumerate(KERNEL_CASES, 1):
        assert f.validate(counter, R) is expected, f"case {number}: counter {counter}"


def _run(counters, expect=True):
    f = ReplayFilter()
    for c in counters:
        assert f.validate(c, R) is expect, c
    return f


def test_bulk_1_fill_window_then_zero():
    f = _run(range(1, WINDOW_SIZE + 1))
    assert f.validate(0, R) is True
    assert f.validate(0, R) is False


def test_bulk_2_shifted_by_one():
    f = _run(range(2, WINDOW_SIZE + 2))
    assert f.validate(1, R) is True
    assert f.validate(0, R) is False


def test_bulk_3_descending():
    _run(range(WINDOW_SIZE + 1, 0, -1))


def test_bulk_4_descending_then_zero_too_old():
    f = _run(range(WINDOW_SIZE + 2, 1, -1))
    assert f.validate(0, R) is False


def test_bulk_5_descending_then_advance():
    f = _run(range(WINDOW_SIZE, 0, -1))
    assert f.validate(WINDOW_SIZE + 1, R) is True
    assert f.validate(0, R) is False


def test_bulk_6_descending_zero_then_advance():
    f = _run(range(WINDOW_SIZE, 0, -1))
    assert f.validate(0, R) is True
    assert f.validate(WINDOW_SIZE + 1, R) is True


def test_reordering_1000_packets_each_accepted_once():
    rnd = random.Random(42)
    counters = list(range(1000))
    # local reordering within a span well inside the window
    for i in range(0, 1000, 50):
        chunk = counters[i : i + 50]
        rnd.shuffle(chunk)
        counters[i : i + 50] = chunk
    f = ReplayFilter()
    assert all(f.validate(c, R) for c in counters)
    dupes = rnd.sample(range(1000), 200)
    assert not any(f.validate(c, R) for c in dupes)


def test_reference_model_random():
    """Differential against a slow set-based model of the same rule."""
    rnd = random.Random(5)
    f, seen, last = ReplayFilter(), set(), 0
    for _ in range(20000):
        c = max(0, last + rnd.randint(-9000, 300))
        want = not (c in seen or (c < last and last - c > WINDOW_SIZE))
        # the ring forgets counters more than WINDOW_SIZE behind, like the model
        got = f.validate(c, R)
        assert got is want, (c, last)
        if got:
            seen.add(c)
            last = max(last, c)


@pytest.mark.parametrize("limit", [10, 1 << 20])
def test_limit_is_exclusive(limit):
    f = ReplayFilter()
    assert f.validate(limit - 1, limit) is True
    assert f.validate(limit, limit) is False
