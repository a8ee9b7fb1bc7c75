"""Fixtures for tests/resolved: the shared `lab`; lab tests skip when the resolved cache dir is missing."""

import pytest

from tests.lab.fixtures import lab  # noqa: F401
from tests.resolved.resolvedlab import SKIP_REASON, cache_ready


@pytest.fixture
def resolved_cache() -> None:
    if not cache_ready():
        pytest.skip(SKIP_REASON)
