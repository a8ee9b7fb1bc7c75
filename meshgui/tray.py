"""QSystemTrayIcon whose icon, tooltip and menu are rebuilt from each ViewState (via the pure meshgui.menu spec)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from meshgui import (
    icons_rc,  # noqa: F401  (registers :/icons)
    menu as menu_spec,
)
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

    def __init__(self, *, clock: Callable[[], dt.datetime], theme: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self._log = logging.getLogger("meshgui.tray")
        self._theme_choice = theme
        self._spec: tuple[menu_spec.MenuItem, ...] | None = None
        self._icon_key: tuple[TrayState, str] | None = None
        self.menu = QMenu()
        self.menu.setObjectName("meshvpn-tray-menu")
        self.icon = QSystemTrayIcon(self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        self.menu.aboutToShow.connect(lambda: self._log.info("tray menu shown"))
        self.menu.aboutToHide.connect(self._on_menu_hidden)
        self._items: dict[int, menu_spec.MenuItem] = {}
        self._pending: tuple[menu_spec.MenuItem, ...] | None = None
        self.rebuilds = 0
        self.in_place_updates = 0

    # ------------------------------------------------------------ rendering

    def show(self) -> None:
        self.icon.show()
        self._log.info("tray icon shown")

    def hide(self) -> None:
        self.icon.hide()

    def set_theme(self, choice: str) -> None:
        self._theme_choice = choice
        self._icon_key = None

    def apply(self, view: ViewState) -> None:
        """Update icon, tooltip and menu: in place if only texts/checks changed, else rebuilt (deferred while open)."""
        theme = icon_theme(self._theme_choice)
        key = (view.tray, theme)
        if key != self._icon_key:
            self._icon_key = key
            self.icon.setIcon(state_icon(view.tray, theme))
        self.icon.setToolTip(menu_spec.tooltip(view))
        spec = menu_spec.build(view, now=self._clock())
        if spec == self._spec:
            return
        if self._spec is not None and _shape(spec) == _shape(self._spec):
            self._spec = spec
            self.in_place_updates += 1
            self._update_in_place(self.menu, spec)
        elif self.menu.isVisible():
            self._pending = spec  # never pull items from under the user's pointer
        else:
            self._spec = spec
            self._rebuild(spec)

    def _on_menu_hidden(self) -> None:
        if self._pending is not None:
            spec, self._pending = self._pending, None
            self._spec = spec
            self._rebuild(spec)

    def _rebuild(self, spec: tuple[menu_spec.MenuItem, ...]) -> None:
        self.rebuilds += 1
        self.menu.clear()
        self._items.clear()
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
                self._set(act, it)
                act.triggered.connect(lambda _=False, a=act: self._on_triggered(a))
                qmenu.addAction(act)

    def _set(self, act: QAction, it: menu_spec.MenuItem) -> None:
        self._items[id(act)] = it
        if act.text() != it.text:
            act.setText(it.text)
        act.setEnabled(it.enabled and bool(it.action))
        act.setToolTip(it.tooltip)
        act.setCheckable(it.checkable)
        if it.checkable:
            act.setChecked(it.checked)

    def _update_in_place(self, qmenu: QMenu, items: tuple[menu_spec.MenuItem, ...]) -> None:
        for act, it in zip(qmenu.actions(), items):
            if it.separator:
                continue
            if it.children:
                if act.text() != it.text:
                    act.setText(it.text)
                self._update_in_place(act.menu(), it.children)
            else:
                self._set(act, it)

    def _on_triggered(self, act: QAction) -> None:
        it = self._items.get(id(act))
        if it is not None and it.checkable:
            act.setChecked(it.checked)  # Qt ticked it already: the tick follows the helper's prefs, not the click
        if it is not None and it.action:
            self.actionTriggered.emit(it.action, it.arg)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            # A left click shows the same menu (hosts differ; XEmbed trays only send clicks).
            self.menu.popup(
                self.icon.geometry().center()
                if self.icon.geometry().isValid()
                else QGuiApplication.primaryScreen().geometry().center()
            )
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


def _shape(items: tuple[menu_spec.MenuItem, ...]) -> tuple:
    """Structure of a menu spec (kinds, actions, nesting) without texts, checks or arguments."""
    return tuple(
        ("-",) if it.separator else ("+", _shape(it.children)) if it.children else ("a", it.action) for it in items
    )
