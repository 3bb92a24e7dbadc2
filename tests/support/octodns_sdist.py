"""octoDNS's own test zones, from the source distribution of the octoDNS version installed here.

The tests compare anycastedge with octoDNS on octoDNS's own fixtures (``tests/config`` in its sdist:
``unit.tests.yaml``, the dynamic and split zones, ...). They are fetched once per octoDNS version
with pip into a cache outside the working tree, ``~/.cache/anycastedge-tests/octodns-<version>/``
(``$ANYCASTEDGE_TEST_CACHE`` overrides the parent directory), and shared by every later run.

Two test processes may race to fill the cache: each downloads and extracts into its own temporary
directory next to the final one and renames it into place; the rename is atomic, and a process that
loses the race uses the winner's copy.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

CACHE_ENV = "ANYCASTEDGE_TEST_CACHE"
CONFIG_DIR = PurePosixPath("tests") / "config"
#: What the cache must hold to count as complete (the rename makes it all or nothing anyway).
MARKER = CONFIG_DIR / "unit.tests.yaml"


class SdistUnavailable(RuntimeError):
    """octoDNS's sdist could not be downloaded or does not hold its test zones."""


def cache_root() -> Path:
    """The parent directory of the per-version caches."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "anycastedge-tests"


def installed_version() -> str:
    """The version of the octoDNS package these tests run against."""
    return importlib.metadata.version("octodns")


def octodns_test_config(version: str | None = None, python: str = sys.executable) -> Path:
    """octoDNS's ``tests/config`` directory for ``version`` (default: the installed one).

    Downloads the sdist with ``python -m pip download`` on first use; raises SdistUnavailable
    with pip's output if that fails.
    """
    version = version or installed_version()
    root = cache_root()
    final = root / f"octodns-{version}"
    if (final / MARKER).is_file():
        return final / CONFIG_DIR
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".octodns-{version}-") as scratch:
        staging = Path(scratch) / "tree"
        _fetch_config(version, python, Path(scratch) / "download", staging)
        try:
            staging.rename(final)
        except OSError:
            # Another process renamed its copy first; theirs is as good as ours.
            if not (final / MARKER).is_file():
                raise
    return final / CONFIG_DIR


def _fetch_config(version: str, python: str, download: Path, staging: Path) -> None:
    command = [
        python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", f"octodns=={version}", "-d", str(download),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    archives = sorted(download.glob("*.tar.gz")) if download.is_dir() else []
    if result.returncode != 0 or len(archives) != 1:
        raise SdistUnavailable(
            f"could not download octoDNS {version}'s source distribution, which holds the test "
            f"zones these tests need: `{' '.join(command)}` exited {result.returncode}\n"
            f"{result.stdout}{result.stderr}"
        )
    _extract_config(archives[0], staging)
    if not (staging / MARKER).is_file():
        raise SdistUnavailable(f"{archives[0].name} has no {MARKER}")


def _extract_config(archive: Path, staging: Path) -> None:
    """Extract ``<top>/tests/config/**`` of the sdist as ``staging/tests/config/**``."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            inner = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath()
            if not (member.isfile() or member.isdir()) or CONFIG_DIR not in inner.parents:
                continue
            member.name = str(inner)
            # The data filter refuses absolute paths, links out of the tree and special files.
            tar.extract(member, staging, filter="data")
