"""Session-wide rules: the suite leaves nothing behind in the working tree."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Hypothesis keeps its example database in ./.hypothesis by default: not in our tree.
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
