"""Fixtures for integration tests: the repo's zones in a tmp dir, served by a real subprocess."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerHandle, copy_repo_zones, running_server

NO_HAPROXY = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="needs haproxy on PATH (make test installs it)"
)


@pytest.fixture(scope="session")
def repo_zones_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repo's zones/ that the session-wide server serves (do not modify it)."""
    return copy_repo_zones(tmp_path_factory.mktemp("session-zones") / "zones")


@pytest.fixture(scope="session")
def server(repo_zones_copy: Path) -> Iterator[ServerHandle]:
    """One `anycastedge serve` for the session, serving the copy of the repo's zones/."""
    with running_server(repo_zones_copy) as handle:
        yield handle


@pytest.fixture
def zones_copy(tmp_path: Path) -> Path:
    """A fresh copy of the repo's zones/ that a test may modify."""
    return copy_repo_zones(tmp_path / "zones")


@pytest.fixture(
    params=[
        pytest.param("builtin", id="builtin"),
        pytest.param("haproxy", id="haproxy", marks=NO_HAPROXY),
    ]
)
def engine(request: pytest.FixtureRequest) -> str:
    """The forwarding engine a forward test runs on (pop.yaml's forward.engine): each test
    taking it runs on both; docs/forwarding.md, "Engines: builtin and haproxy", lists them."""
    return str(request.param)
