"""QSystemTrayIcon whose icon, tooltip and menu are rebuilt from each ViewState (via the pure meshgui.menu spec)."""

from __future__ import annotations

import datetime as dt
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from meshgui import icons_rc  # noqa: F401  (registers :/icons)
from meshgui import menu as menu_spec
from meshgui.state import TrayState, ViewState

THEMES = ("auto", "light", "dark")


def icon_theme(choice: str = "auto") -> str:
    """Which glyph colour fits the panel: 'dark' = light glyph for a dark panel."""
    if choice in ("light", "dark"):
        return choice
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Light:
        return "light"
    return "dark"  # dark panels are the common default on Linux desktops


def state_icon(state: TrayState, theme: str) -> QIcon:
    return QIcon(f":/icons/tray/{theme}/{state.value}.svg")


def app_icon() -> QIcon:
    return QIcon(":/icons/app/meshvpn.svg")


class Tray(QObject):
    """The tray icon; emits actionTriggered(action, arg) for the app to route."""

    actionTriggered = Signal(str, object)

    def __init__(self, *, clock: Callable[[], dt.datetime], theme: str = "auto",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self._theme_choice = theme
        self._spec: tuple[menu_spec.MenuItem, ...] | None = None
        self._icon_key: tuple[TrayState, str] | None = None
        self.menu = QMenu()
        self.menu.setObjectName("meshvpn-tray-menu")
        self.icon = QSystemTrayIcon(self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        self.rebuilds = 0

    # ------------------------------------------------------------ rendering

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def set_theme(self, choice: str) -> None:
        self._theme_choice = choice
        self._icon_key = None

    def apply(self, view: ViewState) -> None:
        """Update icon, tooltip and (only if its spec changed) the menu."""
        theme = icon_theme(self._theme_choice)
        key = (view.tray, theme)
        if key != self._icon_key:
            self._icon_key = key
            self.icon.setIcon(state_icon(view.tray, theme))
        self.icon.setToolTip(menu_spec.tooltip(view))
        spec = menu_spec.build(view, now=self._clock())
        if spec != self._spec:
            self._spec = spec
            self._rebuild(spec)

    def _rebuild(self, spec: tuple[menu_spec.MenuItem, ...]) -> None:
        self.rebuilds += 1
        self.menu.clear()
        self._fill(self.menu, spec)

    def _fill(self, qmenu: QMenu, items: tuple[menu_spec.MenuItem, ...]) -> None:
        for it in items:
            if it.separator:
                qmenu.addSeparator()
            elif it.children:
                sub = qmenu.addMenu(it.text)
                self._fill(sub, it.children)
            else:
                act = QAction(it.text, qmenu)
                act.setEnabled(it.enabled and bool(it.action))
                if it.tooltip:
                    act.setToolTip(it.tooltip)
                if it.checkable:
                    act.setCheckable(True)
                    act.setChecked(it.checked)
                if it.action:
                    act.triggered.connect(lambda _=False, a=it.action, g=it.arg: self.actionTriggered.emit(a, g))
                qmenu.addAction(act)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            # A left click shows the same menu (hosts differ; XEmbed trays only send clicks).
            self.menu.popup(self.icon.geometry().center() if self.icon.geometry().isValid()
                            else QGuiApplication.primaryScreen().geometry().center())
        elif reason == QSystemTrayIcon.ActivationReason.DoubleClick:
            self.actionTriggered.emit("open_window", "")

    # ------------------------------------------------------------ introspection (tests)

    def menu_texts(self) -> list:
        """The built QMenu as nested lists of action texts ('---' for separators)."""
        return _texts(self.menu)

    def notify(self, title: str, body: str) -> None:
        if QSystemTrayIcon.supportsMessages() and self.icon.isVisible():
            self.icon.showMessage(title, body, self.icon.icon(), 8000)


def _texts(qmenu: QMenu) -> list:
    out: list = []
    for act in qmenu.actions():
        if act.isSeparator():
            out.append("---")
        elif act.menu() is not None:
            out.append([act.text(), _texts(act.menu())])
        else:
            out.append(act.text())
    return out
