"""Fixtures for the tailscaled exit-node / MagicDNS / ACL interop tests: the shared `lab` fixture."""

from tests.lab.fixtures import lab  # noqa: F401
