"""`lab down` after an `up` that crashed half way: every namespace and every process goes."""

from __future__ import annotations

import subprocess
import sys

from anycastedge.lab.runner import Lab, lab_namespaces
from anycastedge.lab.topology import LAB, build_commands


def test_down_cleans_up_after_a_crashed_up() -> None:
    """Namespaces half built, a process left running in one, the records lost: `lab down`
    (the command) finds and removes them all."""
    lab = Lab()
    lab.down()
    commands = build_commands(LAB)
    for argv in commands[: len(commands) // 2]:
        subprocess.run(argv, check=True, capture_output=True)
    lab.workdir.mkdir(parents=True)
    stray = lab.start("stray", LAB.namespaces[0], ["sleep", "60"])
    (lab.workdir / "lab.json").unlink()  # as if `up` died before it could keep records
    try:
        assert lab_namespaces()
        out = subprocess.run([sys.executable, "-m", "anycastedge", "lab", "down"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "removed ae-router" in out.stdout
        assert lab_namespaces() == [] and not lab.workdir.exists()
        assert not lab.alive("stray"), f"pid {stray} survived lab down"
    finally:
        lab.down()
