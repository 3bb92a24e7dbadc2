"""Session-wide fixtures: octoDNS's own test zones, and a suite that leaves the tree as found."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.octodns_sdist import SdistUnavailable, octodns_test_config

REPO = Path(__file__).resolve().parents[1]

# Hypothesis keeps its example database and caches (unicode tables) in ./.hypothesis by default:
# not in our tree. Its caches may live in the system's temporary directory; the database nowhere.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "anycastedge-hypothesis")
)
settings.register_profile("anycastedge", database=None)
settings.load_profile("anycastedge")


def _tree_state() -> set[str] | None:
    """Changed, untracked and ignored paths of the checkout (the venv and bytecode aside)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".",
         ":(exclude).venv"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line for line in out.splitlines() if "__pycache__" not in line}


@pytest.fixture(scope="session", autouse=True)
def leaves_the_tree_as_found() -> Iterator[None]:
    """Nothing the tests run (servers, CLIs, benchmarks helpers) writes into the checkout."""
    before = _tree_state()
    yield
    after = _tree_state()
    if before is not None and after is not None:
        assert after == before, f"the tests changed the working tree: {sorted(after ^ before)}"


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
