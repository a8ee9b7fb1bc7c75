"""Fixtures for the tailscaled exit-node / MagicDNS / ACL interop tests: the shared `lab`, plain-HTTP DERP."""

import pytest

from tests.lab.fixtures import lab  # noqa: F401


@pytest.fixture(autouse=True)
def _derp_over_http(monkeypatch):
    """headscale's embedded DERP is plain HTTP in the lab: our helper (like tailscaled) must not dial TLS to it.

    Lab processes inherit os.environ (Host.popen), so this reaches every node these tests start.
    """
    monkeypatch.setenv("MESH_DEBUG_USE_DERP_HTTP", "1")
