"""The lab needs root, iproute2, BIRD and ExaBGP, and network namespaces that can be made."""

from __future__ import annotations

import subprocess

import pytest

from anycastedge.lab.runner import preflight


def _why_not() -> str | None:
    problems = preflight()
    if problems:
        return "; ".join(problems)
    # A namespace of our own, made and removed at once: containers may forbid them.
    made = subprocess.run(["ip", "netns", "add", "ae-canary"], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces cannot be created here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "ae-canary"], capture_output=True, check=True)
    return None


REASON = _why_not()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" not in str(item.path):
            continue
        # Alone: the lab measures lost queries and time to move, which other tests' load on
        # the same CPUs would distort (make test runs the rest in parallel first).
        item.add_marker(pytest.mark.exclusive)
        if REASON is not None:
            item.add_marker(pytest.mark.skip(reason=f"the lab cannot run: {REASON}"))
