"""Typed QSettings wrapper for GUI-only preferences and the user's last network choices (never secrets)."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings


@dataclass(frozen=True)
class Choices:
    """What the user last chose, restored after a helper restart."""

    want_running: bool = False
    exit_node_id: str = ""
    allow_lan: bool = False


class Settings:
    """GUI settings in an INI file (default: ~/.config/meshvpn/meshgui.conf)."""

    def __init__(self, path: str | None = None) -> None:
        if path:
            self._q = QSettings(path, QSettings.Format.IniFormat)
        else:
            self._q = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "meshvpn", "meshgui")

    @property
    def path(self) -> str:
        return self._q.fileName()

    def _str(self, key: str, default: str = "") -> str:
        v = self._q.value(key, default)  # always pass a default: an absent key must not yield None
        return v if isinstance(v, str) else default

    def _bool(self, key: str, default: bool = False) -> bool:
        v = self._q.value(key, "true" if default else "false")
        return v is True or (isinstance(v, str) and v.lower() == "true")

    @property
    def control_url(self) -> str:
        return self._str("network/control_url")

    @control_url.setter
    def control_url(self, url: str) -> None:
        self._q.setValue("network/control_url", url)

    @property
    def icon_theme(self) -> str:
        return self._str("ui/icon_theme", "auto")

    @icon_theme.setter
    def icon_theme(self, v: str) -> None:
        self._q.setValue("ui/icon_theme", v)

    @property
    def tray_notice_shown(self) -> bool:
        return self._bool("ui/no_tray_notice_shown")

    @tray_notice_shown.setter
    def tray_notice_shown(self, v: bool) -> None:
        self._q.setValue("ui/no_tray_notice_shown", "true" if v else "false")

    @property
    def choices(self) -> Choices:
        return Choices(
            self._bool("choices/want_running"), self._str("choices/exit_node_id"), self._bool("choices/allow_lan")
        )

    @choices.setter
    def choices(self, c: Choices) -> None:
        self._q.setValue("choices/want_running", "true" if c.want_running else "false")
        self._q.setValue("choices/exit_node_id", c.exit_node_id)
        self._q.setValue("choices/allow_lan", "true" if c.allow_lan else "false")

    def sync(self) -> None:
        self._q.sync()
