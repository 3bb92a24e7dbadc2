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
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

from anycastedge.bgp.decision import (
    ANNOUNCED,
    DRAINING,
    WITHDRAWN,
    Desired,
    Maintenance,
    api_line,
    decide,
)
from anycastedge.config.bgp import Check
from anycastedge.config.pop import PopConfig
from anycastedge.control.maintenance import HOOK_STATUS_FILE, get_maintenance
from anycastedge.control.statefile import write_json
from anycastedge.health.probes import ProbeResult, probe
from anycastedge.health.state import Health, State, transition

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
class Hook:
    """The hook's loop state; ``run`` drives it until stdin closes or SIGTERM."""

    config: PopConfig
    out: IO[str]
    probe_fn: Callable[[Check, float], ProbeResult] = probe
    is_local: Callable[[str], bool] = prefix_is_local
    health: Health = field(default_factory=Health)
    told: dict[str, Told] = field(default_factory=dict)
    results: dict[str, tuple[ProbeResult, float]] = field(default_factory=dict)
    local: dict[str, bool] = field(default_factory=dict)  # per prefix, as of the last round
    maintenance: Maintenance | None = None  # as of the last reconcile
    stop: threading.Event = field(default_factory=threading.Event)
    stdin_closed: threading.Event = field(default_factory=threading.Event)

    def emit(self, prefix: str, desired: Desired) -> None:
        """Print one API line and remember it."""
        line = api_line(prefix, desired, self.config.bgp)
        self.out.write(line + "\n")
        self.out.flush()
        self.told[prefix] = Told(desired, line, time.time())
        log.info("%s (%s)", line, desired.why)

    def check_round(self, pool: ThreadPoolExecutor) -> bool:
        """Run every check at once; one that has not answered by the timeout has failed."""
        health = self.config.bgp.health
        checks = health.checks
        futures = {pool.submit(self.probe_fn, c, health.timeout): c for c in checks}
        done, _ = wait(futures, timeout=health.timeout + 0.5)
        ok = bool(checks)  # nothing checked vouches for nothing (config refuses this too)
        now = time.time()
        for future, check in futures.items():
            if future in done:
                result = future.result()
            else:
                result = ProbeResult(False, health.timeout, "hung past the timeout")
            self.results[check.label] = (result, now)
            ok = ok and result.ok
        for prefix in self.config.anycast:
            local = self.is_local(prefix)
            if not local and self.local.get(prefix, True) and self.config.bgp.require_local_address:
                log.warning("not announcing %s: not configured on a local interface", prefix)
            self.local[prefix] = local
        return ok

    def reconcile(self) -> bool:
        """Bring every prefix to its desired state; True if anything was printed."""
        maintenance = self.maintenance = get_maintenance(self.config.state_dir)
        changed = False
        now = time.time()
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
            )
            if told is None or (told.desired.status, told.desired.attributes) != (
                desired.status,
                desired.attributes,
            ):
                self.emit(prefix, desired)
                changed = True
        return changed

    def status(self) -> dict[str, Any]:
        """The document written to state_dir/hook.json."""
        state = State.DISABLED if self.maintenance is not None else self.health.state
        if self.stop.is_set():
            state = State.EXIT
        return {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "state": state.value,
            "count": self.health.count,
            "prefixes": {
                p: {
                    "status": t.desired.status,
                    "since": t.since,
                    "line": t.line,
                    "why": t.desired.why,
                }
                for p, t in self.told.items()
            },
            "checks": [
                {"check": label, "ok": r.ok, "latency": r.latency, "detail": r.detail, "at": at}
                for label, (r, at) in self.results.items()
            ],
        }

    def write_status(self) -> None:
        """Record state for `pop status` and serve's /metrics; never fatal."""
        try:
            write_json(self.config.state_dir / HOOK_STATUS_FILE, self.status())
        except OSError as exc:
            log.warning("cannot write hook status: %s", exc)

    def run(self) -> int:
        """Loop until stdin closes (ExaBGP is gone) or SIGTERM (withdraw everything first)."""
        health = self.config.bgp.health
        for prefix in self.config.anycast:  # fail closed: vouch for nothing not yet checked
            self.emit(prefix, Desired(WITHDRAWN, why="hook starting"))
        self.write_status()
        next_round = 0.0
        with ThreadPoolExecutor(max_workers=max(1, len(health.checks))) as pool:
            while not self.stop.is_set() and not self.stdin_closed.is_set():
                now = time.monotonic()
                if now >= next_round:
                    ok = self.check_round(pool)
                    before = self.health.state
                    self.health = transition(self.health, ok, health.rise, health.fall)
                    if self.health.state != before:
                        log.info("health %s -> %s", before.value, self.health.state.value)
                    interval = (
                        health.fast_interval if self.health.state.changing else health.interval
                    )
                    next_round = time.monotonic() + interval
                    self.reconcile()
                    self.write_status()
                elif self.reconcile():
                    self.write_status()
                self.stop.wait(min(MAINTENANCE_POLL, max(0.0, next_round - time.monotonic())))
            if self.stop.is_set() and not self.stdin_closed.is_set():
                for prefix, told in list(self.told.items()):
                    if told.desired.status != WITHDRAWN:
                        self.emit(prefix, Desired(WITHDRAWN, why="hook stopping"))
            self.write_status()
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


def main(config: PopConfig, stdin: IO[str], stdout: IO[str]) -> int:
    """Entry point of `anycastedge bgp hook`."""
    logging.basicConfig(level=logging.INFO, format="anycastedge-hook %(levelname)s %(message)s")
    hook = Hook(config, stdout)
    signal.signal(signal.SIGTERM, lambda signum, frame: hook.stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: hook.stop.set())
    threading.Thread(target=read_acks, args=(stdin, hook), daemon=True).start()
    return hook.run()
