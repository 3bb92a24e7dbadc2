"""Fixtures shared by the unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.octodns_sdist import SdistUnavailable, octodns_test_config


@pytest.fixture(scope="session")
def octodns_config() -> Path:
    """octoDNS's own ``tests/config`` (unit.tests.yaml, dynamic and split zones) for the installed
    octoDNS, from its sdist (cached outside the working tree). Fails, never skips, without it."""
    try:
        return octodns_test_config()
    except SdistUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def octodns_unit_tests(octodns_config: Path) -> Path:
    """octoDNS's test zone ``unit.tests.`` (tests/config/unit.tests.yaml in its repository)."""
    return octodns_config / "unit.tests.yaml"
