"""GUI test configuration: offscreen Qt by default; builders for tailscaled-shaped JSON live in builders.py."""

from __future__ import annotations

import os

# pytest-qt creates the QApplication in-process: offscreen unless a test starts its own X server.
os.environ["QT_QPA_PLATFORM"] = "offscreen"  # X tests run the GUI as a child with their own DISPLAY
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


import pytest  # noqa: E402

from tests.lab.fixtures import lab  # noqa: E402,F401  (lab namespace fixture)


@pytest.fixture
def sock(tmp_path):
    """A LocalAPI socket path in the test's own temporary directory (for FakeLocalAPI and EngineClient)."""
    return str(tmp_path / "helper.sock")


@pytest.fixture(scope="session")
def qloop(qapp):
    """One qasync loop for the whole session (several QEventLoops on one QApplication crash qasync)."""
    from tests.gui.aio import new_loop

    loop = new_loop(qapp)
    yield loop
    loop.close()


from tests.gui.keyring_lab import keyring_backend  # noqa: E402,F401 - fixture: a real gnome-keyring on a private bus
