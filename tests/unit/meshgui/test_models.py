"""PeerModel diff updates (pytest-qt, offscreen): structure signals only, no resets; QAbstractItemModelTester checks."""

from __future__ import annotations

import dataclasses
import random

import pytest
from PySide6.QtTest import QAbstractItemModelTester

from meshgui.models import COL_NAME, PeerFilterModel, PeerModel, PeerRole, _lis_mask
from meshgui.state import PathKind, PeerView, peer_sort_key


def pv(n: int, **kw) -> PeerView:
    base = dict(
        key=f"k{n:05d}",
        id=f"n{n}",
        name=f"host{n:04d}",
        ips=(f"100.64.{n // 250}.{n % 250 + 1}",),
        online=True,
        os="linux",
    )
    base.update(kw)
    return PeerView(**base)


class Recorder:
    """Counts the model's structural signals."""

    def __init__(self, model: PeerModel) -> None:
        self.counts = {"inserted": 0, "removed": 0, "changed": 0, "reset": 0, "moved": 0}
        model.rowsInserted.connect(lambda p, a, b: self._add("inserted", b - a + 1))
        model.rowsRemoved.connect(lambda p, a, b: self._add("removed", b - a + 1))
        model.dataChanged.connect(lambda a, b, roles=None: self._add("changed", b.row() - a.row() + 1))
        model.modelReset.connect(lambda: self._add("reset", 1))
        model.rowsMoved.connect(lambda *a: self._add("moved", 1))

    def _add(self, k: str, n: int) -> None:
        self.counts[k] += n

    def reset(self) -> None:
        for k in self.counts:
            self.counts[k] = 0


@pytest.fixture
def model(qtbot):
    return PeerModel()


@pytest.mark.parametrize("seed", range(3))
def test_model_tester_accepts_small_random_diffs(qtbot, seed):
    """Qt's own consistency checker over random diffs (kept small: it rescans the model on every signal)."""
    m = PeerModel()
    tester = QAbstractItemModelTester(m, QAbstractItemModelTester.FailureReportingMode.Fatal)
    rnd = random.Random(seed)
    pool = [pv(i) for i in range(60)]
    for _ in range(10):
        chosen = [dataclasses.replace(p, online=rnd.random() > 0.3) for p in rnd.sample(pool, rnd.randint(0, 40))]
        chosen.sort(key=peer_sort_key)
        m.set_peers(chosen)
        assert m.peers() == chosen
    del tester


def keys(m: PeerModel) -> list[str]:
    return [p.key for p in m.peers()]


def test_initial_fill_is_one_insert(model):
    rec = Recorder(model)
    peers = [pv(i) for i in range(1000)]
    model.set_peers(peers)
    assert model.peers() == peers
    assert rec.counts == {"inserted": 1000, "removed": 0, "changed": 0, "reset": 0, "moved": 0}


def test_1000_peers_same_update_emits_nothing(model):
    peers = [pv(i) for i in range(1000)]
    model.set_peers(peers)
    rec = Recorder(model)
    model.set_peers(list(peers))
    assert rec.counts == {"inserted": 0, "removed": 0, "changed": 0, "reset": 0, "moved": 0}


def test_1000_peers_field_changes_are_data_changed_only(model):
    peers = [pv(i) for i in range(1000)]
    model.set_peers(peers)
    rec = Recorder(model)
    changed = [dataclasses.replace(p, rx_bytes=p.rx_bytes + 1) if i % 10 == 0 else p for i, p in enumerate(peers)]
    model.set_peers(changed)
    assert model.peers() == changed
    assert rec.counts == {"inserted": 0, "removed": 0, "changed": 100, "reset": 0, "moved": 0}


def test_1000_peers_add_remove(model):
    peers = [pv(i) for i in range(1000)]
    model.set_peers(peers)
    rec = Recorder(model)
    new = [p for i, p in enumerate(peers) if i % 7] + [pv(i) for i in range(1000, 1050)]
    new.sort(key=peer_sort_key)
    model.set_peers(new)
    assert model.peers() == new
    assert rec.counts["reset"] == 0
    assert rec.counts["removed"] == len([i for i in range(1000) if i % 7 == 0])
    assert rec.counts["inserted"] == 50


def test_peer_going_offline_moves_down_with_one_remove_one_insert(model):
    peers = [pv(i) for i in range(1000)]
    model.set_peers(peers)
    rec = Recorder(model)
    new = [dataclasses.replace(p, online=False) if p.key == "k00003" else p for p in peers]
    new.sort(key=peer_sort_key)
    model.set_peers(new)
    assert model.peers() == new and new[-1].key == "k00003"
    assert rec.counts == {"inserted": 1, "removed": 1, "changed": 0, "reset": 0, "moved": 0}


@pytest.mark.parametrize("seed", range(20))
def test_random_1000_peer_diffs_match_target(model, seed):
    rnd = random.Random(seed)
    pool = [pv(i) for i in range(1500)]
    current: list[PeerView] = []
    rec = Recorder(model)
    for _ in range(5):
        chosen = rnd.sample(pool, 1000)
        chosen = [
            dataclasses.replace(
                p, online=rnd.random() > 0.3, latency_ms=rnd.choice([None, 3.0, 41.0]), path=rnd.choice(list(PathKind))
            )
            for p in chosen
        ]
        if rnd.random() < 0.5:
            chosen.sort(key=peer_sort_key)
        else:
            rnd.shuffle(chosen)
        model.set_peers(chosen)
        assert model.peers() == chosen
        current = chosen
    assert rec.counts["reset"] == 0
    assert model.rowCount() == len(current)


def test_duplicate_keys_rejected(model):
    with pytest.raises(ValueError, match="duplicate peer keys"):
        model.set_peers([pv(1), pv(1)])


@pytest.mark.parametrize("seq", [[], [0], [3, 1, 2], [5, 4, 3, 2, 1], [1, 2, 3], [2, 0, 1, 3, 5, 4]])
def test_lis_mask_is_increasing_and_longest(seq):
    mask = _lis_mask(seq)
    picked = [v for v, m in zip(seq, mask) if m]
    assert picked == sorted(picked) and len(set(picked)) == len(picked)
    import itertools

    best = max(
        (len(c) for r in range(len(seq) + 1) for c in itertools.combinations(seq, r) if list(c) == sorted(c)), default=0
    )
    assert len(picked) == best


def test_filter_model_search_and_exit_only(model, qtbot):
    model.set_peers(
        [
            pv(1, name="nas", os="linux"),
            pv(2, name="phone", os="android", exit_node_option=True),
            pv(3, name="desk", os="windows", exit_node_option=True),
        ]
    )
    f = PeerFilterModel()
    f.setSourceModel(model)
    f.set_search("NA")
    # (only roles that always hold a value are read from Python: see the PySide6 note in models.py)
    assert [f.index(r, COL_NAME).data(PeerRole).name for r in range(f.rowCount())] == ["nas"]
    f.set_search("100.64.0.3")
    assert f.rowCount() == 1 and f.index(0, COL_NAME).data(PeerRole).name == "phone"
    f.set_search("")
    assert f.rowCount() == 3
    ex = PeerFilterModel(exit_nodes_only=True)
    ex.setSourceModel(model)
    assert sorted(ex.index(r, 0).data(PeerRole).name for r in range(ex.rowCount())) == ["desk", "phone"]
