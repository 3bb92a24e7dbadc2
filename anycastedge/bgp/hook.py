"""The ExaBGP API process: probe, apply rise/fall, read maintenance, print changes, record state.

It trusts nothing from before its own start: every prefix is withdrawn first (ExaBGP keeps a dead
helper's routes announced), and announced only once this process has seen ``rise`` passing rounds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from anycastedge.bgp.decision import ANNOUNCED, DRAINING, WITHDRAWN, Desired, api_line, decide
from anycastedge.config.pop import PopConfig, load_pop
from anycastedge.errors import ConfigError
from anycastedge.health.check import CheckTarget
from anycastedge.health.probes import ProbeResult, probe
from anycastedge.health.state import Health, State, transition
from anycastedge.statedir.hook import CheckReport, HookStatus, PrefixReport, write_hook_status
from anycastedge.statedir.maintenance import Maintenance, get_maintenance

log = logging.getLogger("anycastedge.hook")
MAINTENANCE_POLL = 0.1  # seconds: `pop withdraw` must take effect within a second


def prefix_is_local(prefix: str) -> bool:
    """Whether the prefix's address is configured on this host (binding to it succeeds)."""
    address = prefix.split("/")[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


@dataclass(slots=True)
class Told:
    """What this process last told ExaBGP about one prefix."""

    desired: Desired
    line: str
    since: float


@dataclass(slots=True)
class ConfigFile:
    """pop.yaml as the hook last read it; ``changed`` rereads it when its mtime moves."""

    path: Path
    mtime: int = 0

    def load(self) -> PopConfig:
        """Read and validate the file now; ConfigError if it is invalid."""
        self.mtime = self.path.stat().st_mtime_ns  # before reading: a later write is seen later
        return load_pop(self.path)

    def changed(self) -> PopConfig | None:
        """The new config if the file changed and validates; None otherwise (errors logged)."""
        try:
            if self.path.stat().st_mtime_ns == self.mtime:
                return None
            return self.load()
        except OSError as exc:
            log.error("cannot read %s, keeping the config in use: %s", self.path, exc)
            return None
        except ConfigError as exc:
            log.error("%s changed but is invalid, keeping the config in use:\n%s", self.path, exc)
            return None


@dataclass(slots=True)
class Hook:
    """The hook's loop state. ``tick`` is one pass; ``run`` drives it until stdin closes or SIGTERM.

    ``clock`` schedules rounds; ``wall`` stamps the status and times drains (maintenance files
    carry wall-clock times). Both are injectable, so tests step the loop without sleeping.
    """

    config: PopConfig
    out: IO[str]
    probe_fn: Callable[[CheckTarget], ProbeResult] = probe
    is_local: Callable[[str], bool] = prefix_is_local
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    config_file: ConfigFile | None = None
    health: Health = field(default_factory=Health)
    told: dict[str, Told] = field(default_factory=dict)
    results: dict[str, tuple[ProbeResult, float]] = field(default_factory=dict)
    local: dict[str, bool] = field(default_factory=dict)  # per prefix, as of the last round
    maintenance: Maintenance | None = None  # as of the last reconcile
    next_round: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    stdin_closed: threading.Event = field(default_factory=threading.Event)

    def emit(self, prefix: str, desired: Desired) -> None:
        """Print one API line and remember it."""
        line = api_line(prefix, desired, self.config.bgp)
        self.out.write(line + "\n")
        self.out.flush()
        self.told[prefix] = Told(desired, line, self.wall())
        log.info("%s (%s)", line, desired.why)

    def check_round(self, pool: Executor) -> bool:
        """Run every check at once; one that has not answered by the timeout has failed."""
        health = self.config.bgp.health
        futures = {pool.submit(self.probe_fn, target): target for target in health.checks}
        done, _ = wait(futures, timeout=health.timeout + 0.5)
        ok = bool(futures)  # fail closed: nothing checked vouches for nothing
        now = self.wall()
        self.results = {}
        for future, target in futures.items():
            if future in done:
                result = future.result()
            else:
                result = ProbeResult(False, health.timeout, "hung past the timeout")
            self.results[str(target)] = (result, now)
            ok = ok and result.ok
        for prefix in self.config.anycast:
            local = self.is_local(prefix)
            if not local and self.local.get(prefix, True) and self.config.bgp.require_local_address:
                log.warning("not announcing %s: not configured on a local interface", prefix)
            self.local[prefix] = local
        return ok

    def reconcile(self) -> bool:
        """Bring every prefix to its desired state; True if anything changed."""
        maintenance = self.maintenance = get_maintenance(self.config.state_dir)
        changed = False
        now = self.wall()
        for prefix in self.config.anycast:
            told = self.told.get(prefix)
            was_announced = told is not None and told.desired.status in (ANNOUNCED, DRAINING)
            desired = decide(
                self.health.state.serving,
                was_announced,
                maintenance,
                now,
                self.config.bgp,
                self.local.get(prefix, False),
                prefix,
            )
            if told is None or (told.desired.status, told.desired.attributes) != (
                desired.status,
                desired.attributes,
            ):
                self.emit(prefix, desired)
                changed = True
            elif told.desired.why != desired.why:
                # Nothing to tell ExaBGP, but `pop status` must show the reason that holds now.
                told.desired = desired
                changed = True
        return changed

    def apply_config(self, config: PopConfig) -> None:
        """Switch to a changed pop.yaml: withdraw prefixes it dropped; the rest follows health."""
        old = self.config
        for prefix in set(self.told) - set(config.anycast):
            if self.told[prefix].desired.status != WITHDRAWN:
                self.emit(prefix, Desired(WITHDRAWN, why="removed from pop.yaml"))
            del self.told[prefix]
        session = ("router_id", "local_as", "local_address", "hold_time", "neighbors")
        if any(getattr(old.bgp, k) != getattr(config.bgp, k) for k in session):
            log.warning(
                "pop.yaml changed the BGP session settings: run `anycastedge bgp render` and "
                "restart ExaBGP to apply them (routes, drain and checks apply now)"
            )
        self.config = config
        self.next_round = 0.0  # check the new checks now
        log.info("pop.yaml reloaded")

    def status(self) -> HookStatus:
        """The record written to state_dir/hook.json."""
        state = State.DISABLED if self.maintenance is not None else self.health.state
        if self.stop.is_set():
            state = State.EXIT
        return HookStatus(
            pid=os.getpid(),
            updated_at=self.wall(),
            state=state.value,
            count=self.health.count,
            prefixes={
                p: PrefixReport(t.desired.status, t.since, t.line, t.desired.why)
                for p, t in self.told.items()
            },
            checks=tuple(
                CheckReport(label, r.ok, r.latency, r.detail, at)
                for label, (r, at) in self.results.items()
            ),
        )

    def write_status(self) -> None:
        """Record state for `pop status` and serve's /metrics; never fatal."""
        try:
            write_hook_status(self.config.state_dir, self.status())
        except OSError as exc:
            log.warning("cannot write hook status: %s", exc)

    def start(self) -> None:
        """Withdraw everything: vouch for nothing not yet checked by this process."""
        for prefix in self.config.anycast:
            self.emit(prefix, Desired(WITHDRAWN, why="hook starting"))
        self.write_status()

    def tick(self, pool: Executor) -> float:
        """One pass: a check round if one is due, then reconcile; seconds until the next pass."""
        if self.clock() >= self.next_round:
            if self.config_file is not None and (config := self.config_file.changed()):
                self.apply_config(config)
            health = self.config.bgp.health
            ok = self.check_round(pool)
            before = self.health.state
            self.health = transition(self.health, ok, health.rise, health.fall)
            if self.health.state != before:
                log.info("health %s -> %s", before.value, self.health.state.value)
            interval = health.fast_interval if self.health.state.changing else health.interval
            self.next_round = self.clock() + interval
            self.reconcile()
            self.write_status()
        elif self.reconcile():
            self.write_status()
        return min(MAINTENANCE_POLL, max(0.0, self.next_round - self.clock()))

    def finish(self) -> None:
        """On SIGTERM withdraw what is announced; when ExaBGP is gone, print nothing more."""
        if not self.stdin_closed.is_set():
            for prefix, told in list(self.told.items()):
                if told.desired.status != WITHDRAWN:
                    self.emit(prefix, Desired(WITHDRAWN, why="hook stopping"))
        self.write_status()

    def run(self) -> int:
        """Loop until stdin closes (ExaBGP is gone) or SIGTERM (withdraw everything first)."""
        self.start()
        # Sized for the checks of the config at start; a reload with more checks queues them.
        workers = max(1, len(self.config.bgp.health.checks))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while not self.stop.is_set():
                self.stop.wait(self.tick(pool))
            self.finish()
            pool.shutdown(wait=False, cancel_futures=True)
        return 0


def read_acks(stream: IO[str], hook: Hook) -> None:
    """Consume ExaBGP's replies on stdin; EOF means ExaBGP is gone and so must we be."""
    for line in stream:
        word = line.strip()
        if word == "error":
            log.error("ExaBGP rejected a command")
        elif word.startswith("shutdown"):
            break
    hook.stdin_closed.set()
    hook.stop.set()


def main(config_file: ConfigFile, config: PopConfig, stdin: IO[str], stdout: IO[str]) -> int:
    """Entry point of `anycastedge bgp hook`: ``config`` was just loaded from ``config_file``."""
    logging.basicConfig(level=logging.INFO, format="anycastedge-hook %(levelname)s %(message)s")
    hook = Hook(config, stdout, config_file=config_file)
    signal.signal(signal.SIGTERM, lambda signum, frame: hook.stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: hook.stop.set())
    threading.Thread(target=read_acks, args=(stdin, hook), daemon=True).start()
    return hook.run()
