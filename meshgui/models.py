"""Qt item models over ViewState.peers that update by diff (insert/remove/move/dataChanged), never by reset.

Diff plan for `PeerModel.set_peers(new)` (rows are identified by node key):
  1. remove rows whose key is gone, bottom-up in contiguous ranges;
  2. keep the longest run of surviving rows already in the right relative order (LIS);
     rows out of order are removed and re-inserted (a peer going offline moves down);
  3. insert new and moved rows in ascending target position, in contiguous ranges;
  4. emit dataChanged for rows whose PeerView changed, in contiguous ranges.
"""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any, Sequence

from PySide6.QtCore import (
    QAbstractTableModel,
    QByteArray,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)

from meshgui.state import PeerView

COLUMNS = ("Name", "IPs", "OS", "Path", "Latency", "Last handshake", "Rx", "Tx")
COL_NAME, COL_IPS, COL_OS, COL_PATH, COL_LATENCY, COL_HANDSHAKE, COL_RX, COL_TX = range(len(COLUMNS))

# Named roles (STYLE R19), usable from list views and QML alike.
PeerRole = Qt.ItemDataRole.UserRole + 1
KeyRole = PeerRole + 1
OnlineRole = PeerRole + 2
SortRole = PeerRole + 3
SearchRole = PeerRole + 4

_Index = QModelIndex | QPersistentModelIndex


def human_bytes(n: int) -> str:
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def ago(t: dt.datetime | None, now: dt.datetime) -> str:
    if t is None:
        return "never"
    s = max(0, int((now - t).total_seconds()))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


class PeerModel(QAbstractTableModel):
    """Table of peers; one row per node key, columns per COLUMNS."""

    def __init__(self, parent=None, *, clock=lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        super().__init__(parent)
        self._rows: list[PeerView] = []
        self._clock = clock
        self.stats = {"inserted": 0, "removed": 0, "changed": 0, "resets": 0}

    # ------------------------------------------------------------ Qt API

    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def roleNames(self) -> dict[int, QByteArray]:
        names = super().roleNames()
        names.update({PeerRole: QByteArray(b"peer"), KeyRole: QByteArray(b"key"), OnlineRole: QByteArray(b"online")})
        return names

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        p = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(p, col)
        if role == PeerRole:
            return p
        if role == KeyRole:
            return p.key
        if role == OnlineRole:
            return p.online
        if role == SearchRole:
            return " ".join((p.name, p.dns_name, p.os, *p.ips, p.user)).lower()
        if role == SortRole:
            return self._sort_value(p, col)
        if role == Qt.ItemDataRole.ToolTipRole and col == COL_NAME:
            return p.dns_name or p.name
        if role == Qt.ItemDataRole.ForegroundRole and not p.online:
            from PySide6.QtGui import QColor

            return QColor(Qt.GlobalColor.gray)
        return None

    def _display(self, p: PeerView, col: int) -> str:
        if col == COL_NAME:
            return p.name + ("" if p.online else " (offline)")
        if col == COL_IPS:
            return ", ".join(p.ips)
        if col == COL_OS:
            return p.os
        if col == COL_PATH:
            if p.path.value == "direct":
                return f"direct {p.path_detail}".strip()
            if p.path.value == "derp":
                return f"relay {p.path_detail}".strip()
            if p.path.value == "peer-relay":
                return "peer relay"
            return "—"
        if col == COL_LATENCY:
            return f"{p.latency_ms:.0f} ms" if p.latency_ms is not None else ""
        if col == COL_HANDSHAKE:
            return ago(p.last_handshake, self._clock()) if p.last_handshake else ""
        if col == COL_RX:
            return human_bytes(p.rx_bytes)
        if col == COL_TX:
            return human_bytes(p.tx_bytes)
        return ""

    @staticmethod
    def _sort_value(p: PeerView, col: int) -> Any:
        if col == COL_LATENCY:
            return p.latency_ms if p.latency_ms is not None else float("inf")
        if col == COL_HANDSHAKE:
            return p.last_handshake.timestamp() if p.last_handshake else 0.0
        if col == COL_RX:
            return p.rx_bytes
        if col == COL_TX:
            return p.tx_bytes
        if col == COL_NAME:
            return (not p.online, p.name.lower())
        return PeerModel._display_static(p, col).lower()

    @staticmethod
    def _display_static(p: PeerView, col: int) -> str:
        return {COL_IPS: ", ".join(p.ips), COL_OS: p.os, COL_PATH: p.path_text}.get(col, p.name)

    # ------------------------------------------------------------ access

    def peers(self) -> list[PeerView]:
        return list(self._rows)

    def peer_at(self, row: int) -> PeerView | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, key: str) -> int:
        return next((i for i, p in enumerate(self._rows) if p.key == key), -1)

    # ------------------------------------------------------------ diff update

    def set_peers(self, new: Sequence[PeerView]) -> None:
        """Make the rows equal to `new` (unique keys) with the fewest structural signals we can cheaply find."""
        new = list(new)
        new_pos = {p.key: i for i, p in enumerate(new)}
        if len(new_pos) != len(new):
            raise ValueError("set_peers: duplicate peer keys")

        # 1. removals of vanished keys (bottom-up, contiguous ranges)
        self._remove_rows([i for i, p in enumerate(self._rows) if p.key not in new_pos])

        # 2. keep the longest increasing subsequence of target positions; move the rest
        targets = [new_pos[p.key] for p in self._rows]
        keep = _lis_mask(targets)
        self._remove_rows([i for i, k in enumerate(keep) if not k])

        # 3. insert missing rows in ascending target order; surviving rows are already in order
        present = {p.key for p in self._rows}
        i = 0
        while i < len(new):
            if new[i].key in present:
                i += 1
                continue
            j = i
            while j < len(new) and new[j].key not in present:
                j += 1
            self.beginInsertRows(QModelIndex(), i, j - 1)
            self._rows[i:i] = new[i:j]
            self.endInsertRows()
            self.stats["inserted"] += j - i
            i = j

        # 4. dataChanged for changed rows (rows now align with `new`)
        i = 0
        last_col = len(COLUMNS) - 1
        while i < len(new):
            if self._rows[i] == new[i]:
                i += 1
                continue
            j = i
            while j < len(new) and self._rows[j] != new[j]:
                self._rows[j] = new[j]
                j += 1
            self.dataChanged.emit(self.index(i, 0), self.index(j - 1, last_col))
            self.stats["changed"] += j - i
            i = j

    def _remove_rows(self, rows: list[int]) -> None:
        """Remove the given (ascending) row numbers, bottom-up, one signal per contiguous range."""
        end = len(rows) - 1
        while end >= 0:
            start = end
            while start > 0 and rows[start - 1] == rows[start] - 1:
                start -= 1
            first, last = rows[start], rows[end]
            self.beginRemoveRows(QModelIndex(), first, last)
            del self._rows[first : last + 1]
            self.endRemoveRows()
            self.stats["removed"] += last - first + 1
            end = start - 1


def _lis_mask(seq: list[int]) -> list[bool]:
    """Mark one longest strictly increasing subsequence of `seq` (O(n log n) patience sorting)."""
    n = len(seq)
    tails: list[int] = []  # seq values
    tails_idx: list[int] = []
    prev = [-1] * n
    for i, v in enumerate(seq):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tails_idx.append(i)
        else:
            tails[k] = v
            tails_idx[k] = i
        prev[i] = tails_idx[k - 1] if k > 0 else -1
    mask = [False] * n
    i = tails_idx[-1] if tails_idx else -1
    while i >= 0:
        mask[i] = True
        i = prev[i]
    return mask


class PeerFilterModel(QSortFilterProxyModel):
    """Search box filter (name, DNS name, OS, IPs, user) and column sorting over PeerModel."""

    def __init__(self, parent=None, *, exit_nodes_only: bool = False) -> None:
        super().__init__(parent)
        self._needle = ""
        self._exit_only = exit_nodes_only
        self.setSortRole(SortRole)
        self.setDynamicSortFilter(True)

    def set_search(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self._needle = text.strip().lower()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._needle = text.strip().lower()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        idx = model.index(source_row, 0, source_parent)
        if self._exit_only:
            peer = model.data(idx, PeerRole)
            if peer is None or not peer.exit_node_option:
                return False
        if not self._needle:
            return True
        return all(word in (model.data(idx, SearchRole) or "") for word in self._needle.split())
