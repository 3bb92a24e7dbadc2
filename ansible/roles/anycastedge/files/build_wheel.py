"""Build an anycastedge wheel from a source tree: build_wheel.py CHECKOUT OUTDIR; prints its path.

Built from a clean copy of what the package is made of (a build in the tree itself would package
stale modules left in its build/ directory), with a fixed timestamp so that the same sources
give the same bytes: the role then reinstalls only when the code changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = ("pyproject.toml", "README.md", "anycastedge")


def main(checkout: Path, out: Path) -> str:
    """Copy, build, and return the wheel's path."""
    with tempfile.TemporaryDirectory(prefix="anycastedge-build-") as scratch:
        for name in SOURCES:
            src, dst = checkout / name, Path(scratch) / name
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dst)
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PYTHONDONTWRITEBYTECODE="1")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), scratch],
            check=True,
            env=env,
            stdout=sys.stderr,
        )
    wheels = sorted(out.glob("anycastedge-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one anycastedge wheel in {out}, found {len(wheels)}")
    return str(wheels[0])


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2])))
