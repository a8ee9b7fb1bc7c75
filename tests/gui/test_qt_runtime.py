"""Guards against a PySide6 build that corrupts reference counts on CPython < 3.12 (seen with PySide6 6.12.0).

With PySide6 6.12.0 on CPython 3.11, every `dataChanged.emit()` drops a reference to False and
every beginInsertRows()/endInsertRows() pair two references to None; after a few thousand model
updates the interpreter aborts ("Fatal Python error: bool_dealloc / none_dealloc"). 6.11.3 is
fine. This test measures the leak with a count far below the crash threshold.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QAbstractTableModel, QModelIndex


class _M(QAbstractTableModel):
    def rowCount(self, parent=QModelIndex()):  # noqa: N802
        return 3

    def columnCount(self, parent=QModelIndex()):  # noqa: N802
        return 3

    def data(self, index, role=0):
        return "x"


def test_model_signals_keep_refcounts(qapp):
    import PySide6

    m = _M()
    top, bottom = m.index(0, 0), m.index(1, 1)
    before = (sys.getrefcount(False), sys.getrefcount(None))
    for _ in range(100):
        m.dataChanged.emit(top, bottom)
        m.beginInsertRows(QModelIndex(), 0, 0)
        m.endInsertRows()
    after = (sys.getrefcount(False), sys.getrefcount(None))
    lost = (before[0] - after[0], before[1] - after[1])
    assert max(lost) < 50, (
        f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} loses references to False/None "
        f"({lost} per 100 model updates): the GUI would abort after a few thousand updates. Use PySide6==6.11.3."
    )
