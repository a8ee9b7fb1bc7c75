"""Suite-wide pytest configuration: lab tests need root; artifacts go to test-artifacts/."""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

os.environ.setdefault("MESH_TESTING", "1")
os.environ.setdefault("MESH_PEER_BIN", os.environ.get("MESH_PEER_CACHE", "/var/cache/meshvpn-peers") + "/bin")


@pytest.fixture(scope="session")
def artifacts_dir() -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root (CI runs as root)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)
