#!/usr/bin/env python3
"""Long fuzzing campaigns over the targets in tests/fuzz, each bounded by time (docs/fuzzing.md).

Run with the project's venv python: `.venv/bin/python bench/fuzz.py --minutes 5`. For each target
it runs rounds of random examples (pytest under the `fuzz` Hypothesis profile, FUZZ_EXAMPLES per
round, a fresh seed each round) until the target's minutes are spent; a round still running then
is stopped (its process only). The first failure stops the campaign and its report is printed,
with the @reproduce_failure blob that replays it; it then belongs in the target as an @example or
a test of its own, with the fix.

With ``--engine atheris`` (``pip install atheris`` into the venv first: it is no dependency of the
project), the same checks run under libFuzzer's coverage-guided mutation instead, from the byte
entry points in tests/fuzz/atheris_targets.py. Nothing is written into the working tree: crash
inputs go to a temporary directory, which is named when there are some.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "dns": "tests/fuzz/test_dns_responder.py",
    "zones": "tests/fuzz/test_zone_loader.py",
    "http": "tests/fuzz/test_http_front.py",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="per target (default 5)")
    p.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    p.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    p.add_argument("--examples", type=int, default=2000,
                   help="hypothesis: examples per test per round (default 2000)")  # fmt: skip
    return p.parse_args()


def hypothesis_round(target: str, examples: int, seconds: float) -> tuple[str, str]:
    """One round of ``target``: ("passed" | "failed" | "stopped", pytest's output)."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "fuzz", "FUZZ_EXAMPLES": str(examples),
           "PYTHONPYCACHEPREFIX": str(REPO / ".venv" / "pycache")}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-x", "--timeout=0",
               "--hypothesis-show-statistics", TARGETS[target]]  # fmt: skip
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()  # this round's pytest, by its PID
            out, _ = proc.communicate()
            return "stopped", out
    return ("passed" if proc.returncode == 0 else "failed"), out


def examples_run(output: str) -> int:
    """Passing examples in a round, from --hypothesis-show-statistics."""
    return sum(int(n) for n in re.findall(r"(\d+) passing, ", output))


def run_hypothesis(targets: list[str], minutes: float, examples: int) -> int:
    for target in targets:
        end = time.monotonic() + minutes * 60
        rounds = done = 0
        while (left := end - time.monotonic()) > 1:
            status, out = hypothesis_round(target, examples, left)
            rounds += 1
            done += examples_run(out)
            if status == "failed":
                print(out)
                print(f"{target}: FAILED in round {rounds}, after {done} passing examples")
                return 1
            if status == "stopped":
                break
        print(f"{target}: {rounds} rounds, {done} examples passed (the last round stopped by the "
              f"clock counts none), {minutes:g} min")  # fmt: skip
    return 0


def run_atheris(targets: list[str], minutes: float) -> int:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    artifacts = Path(tempfile.mkdtemp(prefix="anycastedge-atheris-"))
    status = 0
    for target in targets:
        seconds = max(int(minutes * 60), 1)
        command = [sys.executable, "-m", "tests.fuzz.atheris_targets", target,
                   f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/{target}-",
                   "-print_final_stats=1"]  # fmt: skip
        code = subprocess.run(command, cwd=REPO, check=False).returncode
        print(f"{target}: libFuzzer exited {code}")
        status = status or code
    crashes = sorted(artifacts.iterdir())
    print(f"crash inputs in {artifacts}: {[p.name for p in crashes]}" if crashes else
          "no crash input")  # fmt: skip
    return status


def main() -> int:
    args = parse_args()
    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.engine == "atheris":
        return run_atheris(targets, args.minutes)
    return run_hypothesis(targets, args.minutes, args.examples)


if __name__ == "__main__":
    sys.exit(main())
