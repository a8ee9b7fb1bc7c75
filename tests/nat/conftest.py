"""NAT-traversal tests: shared fixtures (the lab fixture, key builders)."""

from __future__ import annotations

from tests.lab.fixtures import lab  # noqa: F401
