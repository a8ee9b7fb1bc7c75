"""Fixtures for tests/nodepath: the shared `lab` fixture."""

from tests.lab.fixtures import lab  # noqa: F401
