"""Fuzz targets' seed run: committed corpus, then derandomized low-budget Hypothesis on mutated seeds and raw bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import TARGETS, corpus

NAMES = sorted(TARGETS)
_CORPUS: dict[str, list[bytes]] = {}


def _seeds(name: str) -> list[bytes]:
    if name not in _CORPUS:
        _CORPUS[name] = corpus(name)
    return _CORPUS[name]


@pytest.mark.parametrize("name", NAMES)
def test_seed_corpus(name: str) -> None:
    """Every seed (valid messages, edge cases, reproducers of fixed bugs) passes its target."""
    seeds = _seeds(name)
    assert seeds, f"{name}: empty seed corpus"
    for s in seeds:
        TARGETS[name].fn(s)


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_target(name: str) -> None:
    """Hypothesis drives the target with raw bytes and with mutations of its seeds (the long-run mutator)."""
    t = TARGETS[name]
    seeds = _seeds(name)
    mutated = st.tuples(st.sampled_from(seeds), st.randoms(use_true_random=False)).map(
        lambda sr: mutate(sr[1], sr[0], seeds, t.max_len)
    )

    @settings(
        max_examples=200,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.one_of(mutated, st.binary(max_size=512)))
    def run(data: bytes) -> None:
        t.fn(data)

    run()
