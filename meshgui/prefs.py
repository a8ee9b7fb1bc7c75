"""Preferences dialog (a view): custom control server URL (validated off the GUI thread), run at login, icon theme."""

from __future__ import annotations

import asyncio
from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.localapi.schema import DEFAULT_CONTROL_URL
from meshgui import autostart
from meshgui.control_check import CheckResult, check_control_url, check_syntax
from meshgui.settings import Settings
from meshgui.tray import THEMES

Checker = Callable[[str], CheckResult]


class PreferencesDialog(QDialog):
    """Edits Settings; emits saved() after a successful Save."""

    saved = Signal()

    def __init__(
        self,
        settings: Settings,
        *,
        checker: Checker = check_control_url,
        env: dict[str, str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("meshvpn preferences")
        self.settings = settings
        self._checker = checker
        self._env = env
        self._verified = ""  # URL last verified as a control server
        self._task: asyncio.Task | None = None

        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.url = QLineEdit(settings.control_url, self)
        self.url.setObjectName("control_url")
        self.url.setPlaceholderText(f"{DEFAULT_CONTROL_URL} (default)")
        self.url.textChanged.connect(self._on_url_edited)
        self.check = QPushButton("Check", self)
        self.check.setObjectName("check")
        self.check.clicked.connect(self.start_check)
        form.addRow("Control server:", self.url)
        form.addRow("", self.check)
        self.result = QLabel("Leave empty to use Tailscale's server; enter your Headscale address otherwise.", self)
        self.result.setObjectName("check_result")
        self.result.setWordWrap(True)
        form.addRow("", self.result)
        self.run_at_login = QCheckBox("Start meshvpn when I log in", self)
        self.run_at_login.setObjectName("run_at_login")
        self.run_at_login.setChecked(autostart.is_enabled(env))
        form.addRow("", self.run_at_login)
        self.theme = QComboBox(self)
        self.theme.setObjectName("theme")
        self.theme.addItems(["Automatic", "Dark icons (light panel)", "Light icons (dark panel)"])
        self.theme.setCurrentIndex(THEMES.index(settings.icon_theme) if settings.icon_theme in THEMES else 0)
        form.addRow("Tray icon:", self.theme)
        lay.addLayout(form)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def _on_url_edited(self, text: str) -> None:
        self._verified = ""
        syntax = check_syntax(text) if text.strip() else CheckResult(True, "")
        self.result.setText(syntax.message or "Press Check to test the server.")

    def start_check(self) -> None:
        """Validate the URL in a worker thread; the result label updates when done."""
        url = self.url.text().strip()
        syntax = check_syntax(url)
        if not syntax.ok:
            self.result.setText(syntax.message)
            return
        self.check.setEnabled(False)
        self.result.setText(f"Checking {syntax.url}…")
        loop = asyncio.get_event_loop()
        fut = loop.run_in_executor(None, self._checker, syntax.url)
        self._task = asyncio.ensure_future(self._finish(fut))

    async def _finish(self, fut) -> CheckResult:
        try:
            res = await fut
        except Exception as e:  # the checker reports errors itself; this is a last resort
            res = CheckResult(False, f"Check failed: {e}")
        self.check.setEnabled(True)
        self.result.setText(res.message)
        if res.ok:
            self._verified = res.url
        return res

    async def wait_check(self) -> CheckResult | None:
        return await self._task if self._task else None

    def save(self) -> None:
        url = self.url.text().strip().rstrip("/")
        if url and url != self._verified:
            self.result.setText("Press Check first: the server must answer like a control server before it is used.")
            return
        self.settings.control_url = url
        self.settings.icon_theme = THEMES[self.theme.currentIndex()]
        self.settings.sync()
        try:
            autostart.set_enabled(self.run_at_login.isChecked(), self._env)
        except OSError as e:
            self.result.setText(f"Could not change the login item: {e}")
            return
        self.saved.emit()
        self.accept()
