"""The playbooks in ansible/, run for real with ansible-playbook against this very host.

Every inventory here has hosts with ``ansible_connection: local`` (no SSH, nothing leaves the
machine) and addresses on loopback; the role writes under a prefix directory of the test's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOKS = ("site.yml", "zones.yml", "maintenance.yml", "verify.yml")
BIN = Path(sys.executable).parent
PLAYBOOK_TIMEOUT = 600.0  # a first site.yml creates a virtualenv and installs every dependency


@dataclass(frozen=True, slots=True)
class Run:
    """One ansible-playbook run: its exit status, its output, and the recap per host."""

    returncode: int
    output: str
    recap: dict[str, dict[str, int]]

    def counts(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of ``host`` (ok, changed, failed, ...)."""
        return self.recap[host]


def ansible_env(home: Path) -> dict[str, str]:
    """Ansible's own files (temporary, collections cache, ansible-lint's) under ``home``."""
    env = dict(os.environ)
    env.pop("ANSIBLE_CONFIG", None)
    env.update(
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    return env


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """``PLAY RECAP`` lines: host -> {ok: N, changed: N, ...}."""
    recap: dict[str, dict[str, int]] = {}
    section = output.rpartition("PLAY RECAP")[2]
    for line in section.splitlines():
        host, sep, rest = line.partition(" : ")
        if sep:
            recap[host.strip()] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
    return recap


def playbook(
    name: str,
    inventory: Path,
    home: Path,
    extra_vars: Mapping[str, Any] | None = None,
) -> Run:
    """Run ansible/``name`` against ``inventory``; bounded by PLAYBOOK_TIMEOUT."""
    home.mkdir(parents=True, exist_ok=True)
    args = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ANSIBLE_DIR / name)]
    if extra_vars:
        args += ["-e", json.dumps(dict(extra_vars))]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=ansible_env(home),
        cwd=home,
        timeout=PLAYBOOK_TIMEOUT,
    )
    output = result.stdout + result.stderr
    return Run(result.returncode, output, parse_recap(output))


def local_host(**variables: Any) -> dict[str, Any]:
    """Inventory variables of a host reached without SSH, with the tests' Python."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        **variables,
    }


def write_inventory(path: Path, pops: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Path:
    """An inventory like the example's: group ``edge`` with one ``pop_NAME`` group per POP,
    ``pops`` being {POP: {host: variables}}. JSON is YAML."""
    children = {f"pop_{pop}": {"hosts": dict(hosts)} for pop, hosts in pops.items()}
    path.write_text(json.dumps({"edge": {"children": children}}, indent=2))
    return path
