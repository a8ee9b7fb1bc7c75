"""Runs our own helper (tests.support.fake_helper: real LocalAPI server + IPN backend, canned engine) for GUI tests."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from tests.gui.sockproc import serving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def helper_argv(sock: str, work: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.support.fake_helper",
        "serve",
        "--socket",
        sock,
        "--prefs",
        os.path.join(work, "prefs.json"),
        "--journal",
        os.path.join(work, "journal"),
    ]


@contextlib.contextmanager
def our_helper(timeout: float = 30.0) -> Iterator[str]:
    """Yield the socket of a running helper (fake engine); stop it and clean up after."""
    env = dict(os.environ, MESH_TESTING="1", PYTHONPATH=ROOT)
    with serving(
        helper_argv,
        what="helper",
        prefix="meshgui-helper-",
        sock_name="meshvpn.sock",
        env=env,
        cwd=ROOT,
        timeout=timeout,
    ) as sock:
        yield sock
