"""Fixtures for control-plane tests: the shared `lab` fixture."""

from tests.lab.fixtures import lab  # noqa: F401
