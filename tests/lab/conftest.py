"""Fixtures for the lab harness's self-tests: the shared netns `lab` fixture."""

from __future__ import annotations

from tests.lab.fixtures import lab  # noqa: F401  (re-exported fixture)
