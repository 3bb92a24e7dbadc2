"""A BIRD 2 router and an ExaBGP speaker on loopback, and a whole POP (``lab``), for the tests.

BIRD runs the repository's bgp/bird.conf, listening passively on 127.0.0.1 (a free port); ExaBGP
connects from 127.0.0.2, runs the anycastedge hook, and is stopped by its own PID. Routes are read
with ``birdc show route all``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import free_port, stop_process
from tests.support.server import ServerHandle, copy_repo_zones, start_server, wait_for

ROUTER_AS, POP_AS = 65000, 65011
REPO = Path(__file__).resolve().parents[2]
BIRD_CONF = REPO / "bgp" / "bird.conf"
BIRD_PORT_FILE = "bird-port.conf"  # included by bird.conf, from its own directory
# The lab's POP: its prefixes and the hook's timers.
PREFIX = "203.0.113.53/32"
PREFIX6 = "2001:db8:53::53/128"
INTERVAL, FAST, RISE, FALL = 1.0, 0.2, 2, 2
SETTLE = 30.0  # bound for session set-up and rise


@dataclass(frozen=True, slots=True)
class Route:
    """One route as BIRD shows it."""

    prefix: str
    as_path: tuple[int, ...]
    med: int | None
    communities: tuple[tuple[int, int], ...]


def parse_routes(text: str) -> dict[str, Route]:
    """Routes from ``birdc show route all`` output, by prefix."""
    routes: dict[str, Route] = {}
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None:
            routes[str(current["prefix"])] = Route(
                str(current["prefix"]),
                tuple(current.get("as_path", ())),  # type: ignore[arg-type]
                current.get("med"),  # type: ignore[arg-type]
                tuple(current.get("communities", ())),  # type: ignore[arg-type]
            )

    for line in text.splitlines():
        head = re.match(r"^([0-9a-fA-F:.]+/\d+)\s", line)
        if head:
            flush()
            current = {"prefix": head.group(1)}
        elif current is not None:
            line = line.strip()
            if line.startswith("BGP.as_path:"):
                current["as_path"] = [int(a) for a in line.split(":", 1)[1].split()]
            elif line.startswith("BGP.med:"):
                current["med"] = int(line.split(":", 1)[1])
            elif line.startswith("BGP.community:"):
                pairs = re.findall(r"\((\d+),(\d+)\)", line)
                current["communities"] = [(int(a), int(b)) for a, b in pairs]
    flush()
    return routes


@dataclass(slots=True)
class BirdRouter:
    """``bird -f`` with one passive BGP session for the POP at 127.0.0.2."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bird-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "bird.ctl"

    def __enter__(self) -> BirdRouter:
        # The committed router, byte for byte; BIRD resolves its include next to the copy, where
        # this port file replaces the walkthrough's 1790 with a free port.
        conf = self.workdir / "bird.conf"
        shutil.copyfile(BIRD_CONF, conf)
        (self.workdir / BIRD_PORT_FILE).write_text(f"define BGP_PORT = {self.port};\n")
        log = (self.workdir / "bird.log").open("wb")
        self.process = subprocess.Popen(
            [
                "bird",
                "-f",
                "-c",
                str(conf),
                "-s",
                str(self.socket),
                "-P",
                str(self.workdir / "pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._birdc("show status") is not None, 10, "BIRD's control socket")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _birdc(self, command: str) -> str | None:
        result = subprocess.run(
            ["birdc", "-s", str(self.socket), *command.split()],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return result.stdout if result.returncode == 0 else None

    def routes(self) -> dict[str, Route]:
        """Every route BIRD holds, IPv4 and IPv6."""
        return parse_routes(self._birdc("show route all") or "")

    def wait_route(self, prefix: str, timeout: float, what: str = "", **expect: object) -> Route:
        """Poll until ``prefix`` is present with the expected attributes (bounded)."""

        def check() -> Route | None:
            route = self.routes().get(prefix)
            if route is None:
                return None
            return route if all(getattr(route, k) == v for k, v in expect.items()) else None

        return wait_for(check, timeout, what or f"{prefix} with {expect}", interval=0.02)

    def wait_gone(self, prefix: str, timeout: float) -> None:
        """Poll until ``prefix`` is no longer in BIRD's tables (bounded)."""
        wait_for(lambda: prefix not in self.routes(), timeout, f"{prefix} withdrawn", 0.02)


@dataclass(slots=True)
class ExaBgp:
    """ExaBGP running a rendered config, with the rendered environment."""

    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.config.with_suffix(".log")

    def __enter__(self) -> ExaBgp:
        env = dict(os.environ)
        for line in Path(f"{self.config}.env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        exabgp = Path(sys.executable).with_name("exabgp")
        self.process = subprocess.Popen(
            [str(exabgp), str(self.config)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def hook_pids(self) -> list[int]:
        """PIDs of ExaBGP's child processes whose command line is our hook."""
        pids = []
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            for pid in task.read_text().split():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"hook" in cmdline and b"anycastedge" in cmdline:
                    pids.append(int(pid))
        return pids

    def kill_hook(self) -> int:
        """SIGKILL the current hook (a child of this ExaBGP); returns its PID."""
        pid = wait_for(lambda: (self.hook_pids() or [None])[0], 10, "the hook process")
        os.kill(pid, signal.SIGKILL)
        return pid


@dataclass
class Lab:
    """BIRD, ExaBGP with the hook, and serve: one POP announcing to one router, on loopback."""

    router: BirdRouter
    exabgp: ExaBgp
    serve: ServerHandle
    pop_yaml: Path
    state_dir: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "anycastedge", *args, "-c", str(self.pop_yaml)],
            capture_output=True,
            text=True,
            timeout=30,
        )


def write_pop(
    directory: Path, bgp_port: int, dns_port: int, control_port: int, extra: str = ""
) -> Path:
    """pop.yaml for the lab; ``extra`` is appended (more checks must follow ``checks:``)."""
    zones = copy_repo_zones(directory / "zones")
    path = directory / "pop.yaml"
    path.write_text(
        f"""pop: bgp-test
state_dir: state
anycast: [{PREFIX}, {PREFIX6}]
dns:
  listen: ["127.0.0.1:{dns_port}"]
  zones: {zones}
control:
  listen: 127.0.0.1:{control_port}
bgp:
  router_id: 127.0.0.2
  local_as: {POP_AS}
  local_address: 127.0.0.2
  require_local_address: false
  neighbors: [{{address: 127.0.0.1, peer_as: 65000, port: {bgp_port}}}]
  up: {{med: 100}}
  drain: {{seconds: 30, med: 1000, prepend: 3}}
  health:
    interval: {INTERVAL}
    fast_interval: {FAST}
    rise: {RISE}
    fall: {FALL}
    timeout: 0.5
    checks:
      - {{kind: dns, server: "127.0.0.1:{dns_port}", name: example.com., type: SOA}}
{extra}"""
    )
    return path


@contextmanager
def lab(tmp_path: Path, extra: str = "", control_port: int | None = None) -> Iterator[Lab]:
    with BirdRouter() as router:
        dns_port, control_port = free_port(), control_port or free_port()
        pop_yaml = write_pop(tmp_path, router.port, dns_port, control_port, extra)
        conf = tmp_path / "exabgp.conf"
        rendered = subprocess.run(
            [sys.executable, "-m", "anycastedge", "bgp", "render", "-c", str(pop_yaml)]
            + ["-o", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert rendered.returncode == 0, rendered.stderr
        serve = start_server(
            ["serve", "-c", str(pop_yaml)],
            dns_port=dns_port,
            control_port=control_port,
            probe_zone="example.com.",
            cwd=tmp_path,
            workdir=tmp_path,
        )
        try:
            with ExaBgp(conf) as exabgp:
                yield Lab(router, exabgp, serve, pop_yaml, tmp_path / "state")
        finally:
            serve.stop()
