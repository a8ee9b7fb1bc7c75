"""Fixtures for data-plane tests: in-memory device pairs and (for lab tests) the shared netns lab."""

from __future__ import annotations

import contextlib
import os
import secrets

import pytest

from tests.lab.fixtures import lab  # noqa: F401  (the shared lab fixture)

os.environ.setdefault("MESH_TESTING", "1")
