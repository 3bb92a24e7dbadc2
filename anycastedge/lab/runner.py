"""Building, running and tearing down the lab (root): namespaces, links, and the processes in
them, each started by us and recorded by PID in the work directory.

``down`` removes every namespace of the lab and every process inside one, even after a crash of
``up``: it finds them with ``ip netns list`` and ``ip netns pids``, not only in its records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from anycastedge.bgp.exabgp import render_config, render_environment
from anycastedge.config.pop import PopConfig, load_pop
from anycastedge.control.status import PopStatus, pop_status
from anycastedge.errors import AnycastEdgeError
from anycastedge.lab.topology import (
    ANYCAST,
    BACKENDS,
    LAB,
    ROUTER,
    Pop,
    Topology,
    build_commands,
)

WORKDIR = Path("/run/anycastedge-lab")
REPO = Path(__file__).resolve().parents[2]
SETTLE = 30.0  # bound for BGP sessions to come up and the checks to rise
T = TypeVar("T")


class LabError(AnycastEdgeError):
    """The lab cannot be built or a step in it failed; the message says which."""


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` (bounded) until it returns something; LabError naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)  # the interval of a bounded poll


def _run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def _check(argv: Sequence[str]) -> str:
    result = _run(argv)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _ns_pids(ns: str) -> list[int]:
    return [int(p) for p in _run(["ip", "netns", "pids", ns]).stdout.split()]


def _no_pids(ns: str) -> bool:
    return not _ns_pids(ns)


def lab_namespaces(topology: Topology = LAB) -> list[str]:
    """The lab's namespaces that exist now."""
    listed = _run(["ip", "netns", "list"]).stdout.split("\n")
    present = {line.split()[0] for line in listed if line.strip()}
    return [ns for ns in topology.namespaces if ns in present]


def preflight() -> list[str]:
    """What stops the lab on this machine (empty: it can run)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (network namespaces)")
    for tool in ("ip", "bird", "birdc"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed (Debian: iproute2, bird2)")
    if not Path(sys.executable).with_name("exabgp").exists():
        problems.append("exabgp is not installed beside this Python")
    return problems


@dataclass
class Lab:
    """The lab on this machine: its topology, work directory and the processes it started."""

    topology: Topology = LAB
    workdir: Path = WORKDIR
    repo: Path = REPO
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def record(self) -> Path:
        return self.workdir / "lab.json"

    @property
    def bird_socket(self) -> Path:
        return self.workdir / "router" / "bird.ctl"

    def load(self) -> Lab:
        """Read the records of a lab built by an earlier ``up``."""
        try:
            self.processes = json.loads(self.record.read_text())["processes"]
        except (OSError, ValueError, KeyError):
            self.processes = {}
        return self

    def _save(self) -> None:
        self.record.write_text(json.dumps({"processes": self.processes}, indent=2))

    # --- processes ---------------------------------------------------------------------------

    def start(
        self, name: str, ns: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> int:
        """Start ``argv`` inside ``ns`` (detached, logging to the work directory); its PID."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,  # outlives `lab up`, and a Ctrl-C of it
            )
        self.processes[name] = {"pid": process.pid, "ns": ns, "argv": list(argv), "log": str(log)}
        self._save()
        return process.pid

    def alive(self, name: str) -> bool:
        """Whether the process recorded as ``name`` runs."""
        pid = self.processes.get(name, {}).get("pid")
        if pid is None:
            return False
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it was ours and ended
        except ChildProcessError:
            waited = 0
        if waited:
            return False
        try:
            # A zombie (state Z) has ended; its reaper may be slow to notice.
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def stop(self, *names: str, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        """Signal the processes recorded as ``names`` (only them, by PID, all at once) and wait
        for them, bounded; SIGKILL what outlives the grace time."""
        running = [n for n in names if self.alive(n)]
        for kill in (sig, signal.SIGKILL):
            for name in running:
                try:
                    os.kill(self.processes[name]["pid"], kill)
                except ProcessLookupError:
                    pass
            try:
                wait_until(partial(self._all_gone, tuple(running)), grace,
                           f"{', '.join(running)} to stop")  # fmt: skip
                return
            except LabError:
                running = [n for n in running if self.alive(n)]

    def _all_gone(self, names: tuple[str, ...]) -> bool:
        return not any(map(self.alive, names))

    def python(self, *args: str) -> list[str]:
        """``python -m`` of this very Python."""
        return [sys.executable, "-m", *args]

    def netns(self, ns: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``ns`` and wait for it (bounded)."""
        return _run(["ip", "netns", "exec", ns, *argv], timeout=timeout)

    # --- the parts -----------------------------------------------------------------------------

    def pop_config(self, pop: Pop) -> PopConfig:
        """The POP's pop.yaml, as serve and the hook read it."""
        return load_pop(pop.config(self.repo))

    def start_backends(self, pop: Pop) -> None:
        """The POP's HTTP endpoints, in the backends namespace."""
        for endpoint in pop.endpoints:
            argv = self.python("anycastedge.lab.backend", endpoint.name, endpoint.address)
            self.start(endpoint.name, BACKENDS, argv)
        url = "http://{}/health"
        ask = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)"
        for endpoint in pop.endpoints:

            def answers(name: str = endpoint.name, address: str = endpoint.address) -> bool:
                if not self.alive(name):
                    raise LabError(f"{name} exited: see {self.processes[name]['log']}")
                probe = self.netns(BACKENDS, sys.executable, "-c", ask, url.format(address))
                return probe.returncode == 0

            wait_until(answers, SETTLE, f"{endpoint.name} to answer")

    def stop_backends(self, pop: Pop) -> None:
        """Stop the POP's endpoints (by their PIDs), all at once."""
        self.stop(*(endpoint.name for endpoint in pop.endpoints))

    def start_serve(self, pop: Pop) -> None:
        """serve in the POP's namespace; returns once it answers DNS on its own address."""
        name = f"{pop.name}-serve"
        self.start(
            name, pop.ns, self.python("anycastedge", "serve", "-c", str(pop.config(self.repo)))
        )

        def answers() -> bool:
            if not self.alive(name):
                raise LabError(f"{name} exited: see {self.processes[name]['log']}")
            out = self.netns(pop.ns, "dig", f"@{pop.address}", "example.com", "SOA", "+norec",
                             "+time=1", "+tries=1", timeout=10)  # fmt: skip
            return out.returncode == 0 and "status: NOERROR" in out.stdout

        wait_until(answers, SETTLE, f"{pop.name}'s serve to answer")

    def start_exabgp(self, pop: Pop) -> None:
        """ExaBGP with the POP's rendered config and our hook, in the POP's namespace."""
        conf = self.workdir / pop.name / "exabgp.conf"
        conf.write_text(render_config(self.pop_config(pop)))
        env = dict(line.split("=", 1) for line in render_environment().splitlines())
        self.start(f"{pop.name}-exabgp", pop.ns,
                   [str(Path(sys.executable).with_name("exabgp")), str(conf)], env)  # fmt: skip

    def start_router(self) -> None:
        """BIRD with bgp/lab/router.conf in the router namespace."""
        self.bird_socket.parent.mkdir(parents=True, exist_ok=True)
        conf = self.repo / "bgp" / "lab" / "router.conf"
        self.start("router-bird", ROUTER,
                   ["bird", "-f", "-c", str(conf), "-s", str(self.bird_socket)])  # fmt: skip
        wait_until(lambda: self.birdc("show status") is not None, 10, "BIRD's control socket")

    # --- what it looks like ---------------------------------------------------------------------

    def birdc(self, command: str) -> str | None:
        """A birdc command on the router's control socket (a local socket file)."""
        if not self.bird_socket.exists():
            return None
        result = _run(["birdc", "-s", str(self.bird_socket), *command.split()], timeout=5)
        return result.stdout if result.returncode == 0 else None

    def routes(self) -> list[str]:
        """The POPs the router has a route to the anycast address from, the best first."""
        text = self.birdc(f"show route for {ANYCAST}/32 all") or ""
        blocks = re.split(r"\n(?=\S|\s+unicast)", text)
        found: list[str] = []
        for block in blocks:
            via = re.search(r"via (\S+)", block)
            pop = self.topology.pop_by_address(via.group(1)) if via else None
            if pop is not None:
                best = re.search(r"\]\s+\*", block) is not None
                found.insert(0 if best else len(found), pop.name)
        return found

    def preferred(self) -> str | None:
        """The POP the router sends anycast traffic to, or None."""
        routes = self.routes()
        return routes[0] if routes else None

    def hook_status(self, pop: Pop) -> PopStatus:
        """What the POP's hook last reported (its state directory)."""
        return pop_status(self.pop_config(pop))

    def steady(self) -> bool:
        """Every POP healthy and announced (its hook says so, the router has its route), and
        the first one preferred: the state every scenario starts from."""
        hooks = [self.hook_status(p) for p in self.topology.pops]
        healthy = all(h.exit_code == 0 and h.hook and h.hook.state == "UP" for h in hooks)
        names = [p.name for p in self.topology.pops]
        return healthy and self.routes() == names

    def wait_steady(self, timeout: float = SETTLE) -> None:
        """Until ``steady`` (bounded)."""
        wait_until(self.steady, timeout, "every POP up and announced, the first preferred")

    # --- up, down, status ------------------------------------------------------------------------

    def up(self) -> None:
        """Build the network, start every process, wait until both POPs announce; on any
        failure remove everything it made."""
        problems = preflight()
        if problems:
            raise LabError("; ".join(problems))
        self.down()  # leftovers of an earlier run, crashed or not
        try:
            self.workdir.mkdir(parents=True)
            for pop in self.topology.pops:
                (self.workdir / pop.name).mkdir()
            for argv in build_commands(self.topology):
                _check(argv)
            for pop in self.topology.pops:
                self.start_backends(pop)
                self.start_serve(pop)
            self.start_router()
            for pop in self.topology.pops:
                self.start_exabgp(pop)
            self.wait_steady()
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Stop every process in the lab's namespaces, delete the namespaces and the work
        directory; what it removed."""
        removed = []
        for ns in lab_namespaces(self.topology):
            # Every process in a lab namespace was started there by the lab (or by one it
            # started, like ExaBGP's hook): those, and only those, are ended.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in _ns_pids(ns):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    wait_until(partial(_no_pids, ns), 5.0, f"the processes in {ns} to stop")
                    break
                except LabError:
                    continue
            _check(["ip", "netns", "del", ns])
            removed.append(ns)
        for record in self.load().processes.values():
            try:
                os.waitpid(record["pid"], os.WNOHANG)  # reap what this process started
            except ChildProcessError:
                pass
        self.processes = {}
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        return removed

    def status(self) -> dict[str, Any]:
        """Namespaces, the router's routes (best first) and each POP's hook state."""
        self.load()
        pops = {}
        for pop in self.topology.pops:
            status = self.hook_status(pop) if (self.workdir / pop.name).exists() else None
            hook = status.hook if status else None
            pops[pop.name] = {
                "serve": self.alive(f"{pop.name}-serve"),
                "exabgp": self.alive(f"{pop.name}-exabgp"),
                "maintenance": bool(status and status.in_maintenance),
                "hook": hook.state if hook else None,
                "prefixes": {p: r.status for p, r in hook.prefixes.items()} if hook else {},
            }
        return {
            "namespaces": lab_namespaces(self.topology),
            "routes": self.routes(),
            "preferred": self.preferred(),
            "pops": pops,
        }
