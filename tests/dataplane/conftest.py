"""Fixtures for data-plane tests: the shared netns lab fixture; fakes need MESH_TESTING=1."""

from __future__ import annotations

import os

from tests.lab.fixtures import lab  # noqa: F401  (the shared lab fixture)

os.environ.setdefault("MESH_TESTING", "1")
