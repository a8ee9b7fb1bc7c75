"""meshgui unit tests: Qt, where a test needs it (pytest-qt's qapp/qtbot for the models), runs offscreen."""

from __future__ import annotations

import os

# Same settings as tests/gui/conftest.py, so these tests also run alone (`pytest tests/unit`): no display needed.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
