"""Main window (a view only): searchable peer table, peer details, exit node picker, network settings, copy actions.

Emits actionRequested(action, arg) with the same action names as the tray menu; never
touches the socket.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from PySide6.QtCore import QItemSelection, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from meshgui import menu as menu_spec
from meshgui.models import COL_NAME, PeerFilterModel, PeerModel, ago, human_bytes
from meshgui.state import PeerView, TrayState, ViewState
from meshgui.tray import app_icon


class MainWindow(QMainWindow):
    """Peers and exit node at a glance; details of the selected peer."""

    actionRequested = Signal(str, object)

    def __init__(self, *, clock: Callable[[], dt.datetime], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self._view = ViewState()
        self._selected_key = ""
        self._combo_items: list[tuple[str, str]] = []
        self.setWindowTitle("meshvpn")
        self.setWindowIcon(app_icon())
        self.resize(980, 600)

        self.model = PeerModel(self, clock=clock)
        self.proxy = PeerFilterModel(self)
        self.proxy.setSourceModel(self.model)

        central = QWidget(self)
        outer = QVBoxLayout(central)

        self.banner = QLabel("", central)
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "QLabel#banner { background: #fff4ce; color: #3b2f00; padding: 6px; border-radius: 4px; }"
        )
        self.banner.hide()
        outer.addWidget(self.banner)

        top = QHBoxLayout()
        self.status_label = QLabel("", central)
        self.status_label.setObjectName("status")
        font = self.status_label.font()
        font.setBold(True)
        self.status_label.setFont(font)
        self.self_label = QLabel("", central)
        self.self_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.primary = QPushButton("", central)
        self.primary.setObjectName("primary")
        self.primary.clicked.connect(self._on_primary)
        top.addWidget(self.status_label)
        top.addStretch(1)
        top.addWidget(self.self_label)
        top.addWidget(self.primary)
        outer.addLayout(top)

        exits = QHBoxLayout()
        exits.addWidget(QLabel("Exit node:", central))
        self.exit_combo = QComboBox(central)
        self.exit_combo.setObjectName("exit_combo")
        self.exit_combo.setMinimumWidth(220)
        self.exit_combo.activated.connect(self._on_exit_chosen)
        exits.addWidget(self.exit_combo)
        self.allow_lan = QCheckBox("Allow local network access", central)
        self.allow_lan.setObjectName("allow_lan")
        self.allow_lan.clicked.connect(lambda checked: self.actionRequested.emit("allow_lan", bool(checked)))
        exits.addWidget(self.allow_lan)
        exits.addStretch(1)
        outer.addLayout(exits)

        # This device's network prefs, the same toggles as the tray's "Network settings" submenu.
        net = QHBoxLayout()
        self.net_label = QLabel("Network settings:", central)
        net.addWidget(self.net_label)
        self.net_boxes: dict[str, QCheckBox] = {}
        for action, text in (
            ("set_corp_dns", "Use tailnet DNS"),
            ("set_route_all", "Use subnet routes"),
            ("set_allow_incoming", "Allow incoming connections"),
            ("set_advertise_exit_node", "Run as exit node"),
        ):
            box = QCheckBox(text, central)
            box.setObjectName(action)
            box.clicked.connect(lambda checked, a=action: self._on_net_toggle(a, bool(checked)))
            self.net_boxes[action] = box
            net.addWidget(box)
        self.exit_approval = QLabel("", central)
        self.exit_approval.setObjectName("exit_approval")
        net.addWidget(self.exit_approval)
        net.addStretch(1)
        outer.addLayout(net)

        self.search = QLineEdit(central)
        self.search.setObjectName("search")
        self.search.setPlaceholderText("Search devices by name, IP, OS or user…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_search)
        outer.addWidget(self.search)

        split = QSplitter(Qt.Orientation.Horizontal, central)
        self.table = QTableView(split)
        self.table.setObjectName("peers")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        for col, width in enumerate((130, 210, 60, 170, 70, 110, 80, 80)):
            self.table.setColumnWidth(col, width)
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.table.doubleClicked.connect(self._on_double_click)

        details = QFrame(split)
        details.setFrameShape(QFrame.Shape.StyledPanel)
        details.setMaximumWidth(340)
        dl = QVBoxLayout(details)
        self.detail_title = QLabel("Select a device", details)
        self.detail_title.setFont(font)
        dl.addWidget(self.detail_title)
        form = QFormLayout()
        self.fields: dict[str, QLabel] = {}
        for key in (
            "DNS name",
            "IPs",
            "OS",
            "User",
            "Path",
            "Latency",
            "Last handshake",
            "Received",
            "Sent",
            "Exit node",
        ):
            lab = QLabel("", details)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            self.fields[key] = lab
            form.addRow(key + ":", lab)
        dl.addLayout(form)
        buttons = QGridLayout()
        self.copy_ip = QPushButton("Copy IP", details)
        self.copy_dns = QPushButton("Copy DNS name", details)
        self.ping = QPushButton("Ping", details)
        self.use_exit = QPushButton("Use as exit node", details)
        for i, b in enumerate((self.copy_ip, self.copy_dns, self.ping, self.use_exit)):
            b.setEnabled(False)
            buttons.addWidget(b, i // 2, i % 2)
        self.copy_ip.clicked.connect(lambda: self._peer_action("copy", lambda p: p.ipv4 or p.ips[0]))
        self.copy_dns.clicked.connect(lambda: self._peer_action("copy", lambda p: p.dns_name or p.name))
        self.ping.clicked.connect(lambda: self._peer_action("ping", lambda p: p.key))
        self.use_exit.clicked.connect(lambda: self._peer_action("set_exit_node", lambda p: p.id))
        dl.addLayout(buttons)
        dl.addStretch(1)
        split.addWidget(self.table)
        split.addWidget(details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([680, 300])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)

    # ------------------------------------------------------------ rendering

    def show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def apply(self, view: ViewState) -> None:
        self._view = view
        self.status_label.setText(menu_spec.headline(view))
        me = view.self_node
        self.self_label.setText(f"{me.name}  {'  '.join(me.ips)}" if me.name else "")
        primary = {
            TrayState.STOPPED: ("Connect", "connect"),
            TrayState.CONNECTING: ("Disconnect", "disconnect"),
            TrayState.CONNECTED: ("Disconnect", "disconnect"),
            TrayState.EXIT_NODE: ("Disconnect", "disconnect"),
            TrayState.NEEDS_LOGIN: ("Cancel login", "cancel_login") if view.login_pending else ("Log in…", "login"),
            TrayState.HELPER_DOWN: ("Start helper", "start_helper"),
        }.get(view.tray)
        self.primary.setVisible(primary is not None and not view.read_only)
        if primary:
            self.primary.setText(primary[0])
            self.primary.setProperty("meshAction", primary[1])
        self.model.set_peers(view.peers)
        self._apply_exit_nodes(view)
        self._apply_network_settings(view)
        self._show_details(self._selected_peer())
        if view.read_only:
            self.show_banner(
                "Read-only: you may not control the VPN on this computer. Ask an administrator to "
                "make you its operator (sudo meshctl set --operator=$USER)."
            )

    def _apply_exit_nodes(self, view: ViewState) -> None:
        items = [("None", "")] + [
            (p.name + ("" if p.online else " (offline)"), p.id)
            for p in sorted(view.exit_options, key=lambda p: (not p.online, p.name.lower()))
        ]
        if items != self._combo_items:
            self.exit_combo.blockSignals(True)
            self.exit_combo.clear()
            for text, _ in items:
                self.exit_combo.addItem(text)
            self._combo_items = items
            self.exit_combo.blockSignals(False)
        ids = [i for _, i in self._combo_items]
        idx = ids.index(view.exit_node_id) if view.exit_node_id in ids else 0
        self.exit_combo.setCurrentIndex(idx)
        enabled = view.tray in (TrayState.CONNECTED, TrayState.EXIT_NODE, TrayState.STOPPED) and not view.read_only
        self.exit_combo.setEnabled(enabled)
        self.allow_lan.setEnabled(enabled)
        self.allow_lan.setChecked(view.allow_lan)

    def _net_checked(self, view: ViewState) -> dict[str, bool]:
        return {
            "set_corp_dns": view.corp_dns,
            "set_route_all": view.route_all,
            "set_allow_incoming": view.allow_incoming,
            "set_advertise_exit_node": view.advertises_exit_node,
        }

    def _apply_network_settings(self, view: ViewState) -> None:
        shown = view.tray in (TrayState.CONNECTED, TrayState.EXIT_NODE, TrayState.STOPPED) and not view.read_only
        self.net_label.setVisible(shown)
        for action, checked in self._net_checked(view).items():
            box = self.net_boxes[action]
            box.setVisible(shown)
            box.setChecked(checked)
        exit_box = self.net_boxes["set_advertise_exit_node"]
        exit_box.setEnabled(view.advertises_exit_node or not view.exit_node_id)
        exit_box.setToolTip(
            "Stop using an exit node first"
            if not exit_box.isEnabled()
            else "Offer this device's internet connection to the tailnet (the admin must approve it)"
        )
        self.exit_approval.setText(
            menu_spec.EXIT_APPROVAL_TEXT[view.exit_node_approval] if view.advertises_exit_node else ""
        )
        self.exit_approval.setVisible(shown and view.advertises_exit_node)

    def _on_net_toggle(self, action: str, checked: bool) -> None:
        """Ask for the change, and show the helper's value until its prefs say otherwise (a view only)."""
        self.net_boxes[action].setChecked(self._net_checked(self._view)[action])
        self.actionRequested.emit(action, checked)

    # ------------------------------------------------------------ selection & details

    def _selected_peer(self) -> PeerView | None:
        if not self._selected_key:
            return None
        row = self.model.row_of(self._selected_key)
        return self.model.peer_at(row) if row >= 0 else None

    def select_peer(self, key: str) -> None:
        row = self.model.row_of(key)
        if row < 0:
            return
        proxy_index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.selectRow(proxy_index.row())

    def _on_selection(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        peer = None
        if rows:
            src = self.proxy.mapToSource(rows[0])
            peer = self.model.peer_at(src.row())
        self._selected_key = peer.key if peer else ""
        self._show_details(peer)

    def _show_details(self, p: PeerView | None) -> None:
        for b in (self.copy_ip, self.copy_dns, self.ping, self.use_exit):
            b.setEnabled(p is not None)
        if p is None:
            self.detail_title.setText("Select a device")
            for lab in self.fields.values():
                lab.setText("")
            return
        self.use_exit.setEnabled(p.exit_node_option and not self._view.read_only)
        self.ping.setEnabled(p.online)
        self.detail_title.setText(p.name + ("" if p.online else " (offline)"))
        now = self._clock()
        values = {
            "DNS name": p.dns_name,
            "IPs": "\n".join(p.ips),
            "OS": p.os,
            "User": p.user,
            "Path": {
                "direct": f"direct ({p.path_detail})",
                "derp": f"relay (DERP {p.path_detail})",
                "peer-relay": f"peer relay ({p.path_detail})",
            }.get(p.path.value, "unknown"),
            "Latency": f"{p.latency_ms:.1f} ms" if p.latency_ms is not None else "not measured",
            "Last handshake": ago(p.last_handshake, now),
            "Received": human_bytes(p.rx_bytes),
            "Sent": human_bytes(p.tx_bytes),
            "Exit node": "in use"
            if p.id and p.id == self._view.exit_node_id
            else ("offered" if p.exit_node_option else "no"),
        }
        for k, v in values.items():
            self.fields[k].setText(v)

    def _peer_action(self, action: str, arg: Callable[[PeerView], str]) -> None:
        p = self._selected_peer()
        if p is not None:
            self.actionRequested.emit(action, arg(p))

    def _on_double_click(self, index: QModelIndex) -> None:
        p = self.model.peer_at(self.proxy.mapToSource(index).row())
        if p is not None and p.ips:
            self.actionRequested.emit("copy", p.ipv4 or p.ips[0])

    def _on_primary(self) -> None:
        action = self.primary.property("meshAction")
        if isinstance(action, str) and action:
            self.actionRequested.emit(action, "")

    def _on_exit_chosen(self, index: int) -> None:
        ids = [i for _, i in self._combo_items]
        if 0 <= index < len(ids):
            self.actionRequested.emit("set_exit_node", ids[index])
