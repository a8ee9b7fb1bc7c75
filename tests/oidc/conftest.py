"""Fixtures for the browser-SSO tests: the shared `lab` fixture and `sso` (IdP + headscale with OIDC + client host)."""

import pytest

from tests.lab.fixtures import lab  # noqa: F401
from tests.lab.oidc import start_sso_lab


@pytest.fixture
def sso(lab):  # noqa: F811
    """A started SsoLab (see tests/lab/oidc.py); torn down with `lab`."""
    return start_sso_lab(lab)
