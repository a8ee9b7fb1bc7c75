"""The "Waiting for browser login…" dialog with the login link, copy, open-again and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class LoginDialog(QDialog):
    """Non-modal; the app shows it while ViewState.login_pending and hides it afterwards."""

    cancelRequested = Signal()
    openRequested = Signal(str)
    copyRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("meshvpn login")
        self.setMinimumWidth(560)  # login URLs are long and have no wrap points
        self._url = ""
        lay = QVBoxLayout(self)
        self.message = QLabel("Waiting for browser login…", self)
        self.message.setObjectName("message")
        lay.addWidget(self.message)
        self.link = QLabel("Asking the control server for a login page…", self)
        self.link.setObjectName("link")
        self.link.setWordWrap(True)
        self.link.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.link)
        row = QHBoxLayout()
        self.open_btn = QPushButton("Open again", self)
        self.copy_btn = QPushButton("Copy link", self)
        self.cancel_btn = QPushButton("Cancel", self)
        self.cancel_btn.setObjectName("cancel")
        for b in (self.open_btn, self.copy_btn):
            b.setEnabled(False)
        row.addWidget(self.open_btn)
        row.addWidget(self.copy_btn)
        row.addStretch(1)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.open_btn.clicked.connect(lambda: self.openRequested.emit(self._url))
        self.copy_btn.clicked.connect(lambda: self.copyRequested.emit(self._url))
        self.cancel_btn.clicked.connect(self.cancelRequested.emit)
        self.rejected.connect(self.cancelRequested.emit)

    def set_url(self, url: str) -> None:
        self._url = url
        if url:
            self.link.setText(f"If no browser opened, open this link:\n{url}")
        for b in (self.open_btn, self.copy_btn):
            b.setEnabled(bool(url))
