"""pytest fixtures for lab tests: `lab` yields a fresh Lab and keeps its process logs under test-artifacts/lab/."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.lab.netlab import REPO_ROOT, Lab

_LOG_SUFFIXES = (".log", ".out", ".err", ".txt", ".png")


def _only_logs(directory, names):
    """copytree filter: keep logs and screenshots, never keys, state files or databases."""
    return [n for n in names if not os.path.isdir(os.path.join(directory, n)) and not n.endswith(_LOG_SUFFIXES)]


@pytest.fixture
def lab(request):
    """A function-scoped Lab; torn down after the test, process logs copied to test-artifacts/lab/<test>/."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    lab = Lab(keep_logs=True)
    try:
        with lab:
            yield lab
    finally:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
        dest = REPO_ROOT / "test-artifacts" / "lab" / safe
        try:
            if any(lab.dir.iterdir()):
                shutil.rmtree(dest, ignore_errors=True)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(lab.dir, dest, ignore=_only_logs)
        except OSError:
            pass
        shutil.rmtree(lab.dir, ignore_errors=True)


__all__ = ["lab"]
