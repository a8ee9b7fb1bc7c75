"""Fixtures for the NAT matrix tests: the shared `lab` fixture."""

from tests.lab.fixtures import lab  # noqa: F401
