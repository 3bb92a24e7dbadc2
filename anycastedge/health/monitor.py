"""The GSLB health monitor: probes every target on its own schedule, in threads off the reactor.

The DNS path only reads ``serving()``, a dict lookup: it never waits on a probe. Probes block, so
they run in a thread pool of their own; their results come back on the reactor thread, where all
of the monitor's state lives and changes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from anycastedge.health.check import CheckTarget
from anycastedge.health.probes import ProbeResult, probe
from anycastedge.health.state import Health, State, transition

log = Logger()

# The zone config enforces at least this too; a hand-built HealthCheck must not spin the reactor.
MIN_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What the monitor knows of one target, for the answer engine and /status."""

    health: Health
    serving: bool
    last_ok: bool | None  # None until the first result
    last_detail: str
    last_at: float | None  # wall clock (time.time()) of the last result
    latency: float | None  # seconds the last probe took
    checks: int  # how many results have been recorded


# Nothing known yet: assumed up, as gdnsd does, so that a (re)load never blackholes a name.
UNCHECKED = TargetStatus(Health(), True, None, "", None, None, 0)


@dataclass(slots=True)
class _Slot:
    """One wanted target: its schedule and latest status. Mutable, touched on the reactor only."""

    target: CheckTarget
    status: TargetStatus = UNCHECKED
    due: float = 0.0  # reactor time of the round the pending call is for
    call: DelayedCall | None = None
    in_flight: bool = False


def _serving(health: Health) -> bool:
    return health.state == State.INIT or health.state.serving


class HealthMonitor(Service):
    """Health checks for the ``obey`` values of dynamic records, keyed by CheckTarget."""

    def __init__(
        self,
        reactor: Any,
        on_change: Callable[[CheckTarget, bool], None] | None = None,
        probe: Callable[[CheckTarget], ProbeResult] = probe,
        workers: int = 16,
        run_in_thread: bool = True,
        assume_up: bool = True,
        on_result: Callable[[CheckTarget, bool, bool], None] | None = None,
    ) -> None:
        """``run_in_thread=False`` (for tests) calls ``probe`` on the reactor thread instead of in
        the pool; such a test probe may also return a Deferred, to finish when the test says.

        ``assume_up``: a target not checked yet counts as serving (GSLB: a reload never
        blackholes a name); without it, not until its first passing check (forwarding: fail
        closed). ``on_result(target, ok, serving)`` hears every result, ``on_change`` changes.
        """
        self._reactor = reactor
        self._on_change = on_change
        self._on_result = on_result
        self._unchecked = UNCHECKED if assume_up else replace(UNCHECKED, serving=False)
        self._probe = probe
        self._workers = workers
        self._run_in_thread = run_in_thread
        self._slots: dict[CheckTarget, _Slot] = {}
        self._pool: ThreadPool | None = None
        self._stopping = threading.Event()
        # Bumped by stopService: results of probes started before a stop carry an older epoch.
        self._epoch = 0

    # --- what the DNS path and /status read

    def serving(self, target: CheckTarget) -> bool:
        """Whether ``target`` may be used (before its first result: as ``assume_up`` says)."""
        return self.status(target).serving

    def status(self, target: CheckTarget) -> TargetStatus:
        """The status of ``target``, the unchecked one for a target the monitor does not know."""
        slot = self._slots.get(target)
        return self._unchecked if slot is None else slot.status

    def statuses(self) -> dict[CheckTarget, TargetStatus]:
        """A snapshot of every wanted target's status."""
        return {target: slot.status for target, slot in self._slots.items()}

    # --- what zone (re)loads call

    def update(self, targets: Iterable[CheckTarget]) -> None:
        """Check exactly ``targets`` from now on: start new ones, drop the others, keep the rest."""
        wanted = dict.fromkeys(targets)  # ordered and deduplicated: equal targets share one probe
        for target in [t for t in self._slots if t not in wanted]:
            self._forget(self._slots.pop(target))
        new = [_Slot(target, self._unchecked) for target in wanted if target not in self._slots]
        for slot in new:
            self._slots[slot.target] = slot
        if self.running:
            self._schedule_first(new)

    # --- the service

    def startService(self) -> None:
        """Start the pool and the checks of every target wanted so far."""
        super().startService()
        if self._run_in_thread:
            self._stopping = threading.Event()
            self._pool = ThreadPool(minthreads=0, maxthreads=self._workers, name="gslb-health")
            self._pool.start()
        self._schedule_first(list(self._slots.values()))

    def stopService(self) -> None:
        """Cancel every pending check and stop the pool; results still arriving are ignored.

        Blocks until the probes running right now end (each is bounded by its timeout); queued
        ones return at once without probing.
        """
        super().stopService()
        self._epoch += 1
        for slot in self._slots.values():
            self._forget(slot)
        if self._pool is not None:
            self._stopping.set()
            self._pool.stop()
            self._pool = None

    # --- scheduling

    def _schedule_first(self, slots: list[_Slot]) -> None:
        """Start ``slots`` now, their first checks spread over the interval instead of one burst."""
        now = self._reactor.seconds()
        for i, slot in enumerate(slots):
            spread = self._interval(slot)
            if not self._unchecked.serving:
                spread = min(spread, 1.0)  # unusable until checked: check them all soon
            slot.due = now + i * spread / len(slots)
            slot.call = self._reactor.callLater(slot.due - now, self._round, slot)

    def _forget(self, slot: _Slot) -> None:
        if slot.call is not None and slot.call.active():
            slot.call.cancel()
        slot.call = None
        slot.in_flight = False

    def _interval(self, slot: _Slot) -> float:
        return max(slot.target.check.interval, MIN_INTERVAL)

    def _round(self, slot: _Slot) -> None:
        """One scheduled round of ``slot``: schedule the next one, then probe unless still busy."""
        interval = self._interval(slot)
        now = self._reactor.seconds()
        # A fixed rate from the target's own start; a reactor that fell behind skips the rounds it
        # missed rather than firing them in a burst.
        slot.due += interval
        if slot.due <= now:
            slot.due += math.floor((now - slot.due) / interval + 1) * interval
        slot.call = self._reactor.callLater(slot.due - now, self._round, slot)
        if slot.in_flight:
            return  # the previous probe has not answered yet: never two of one target at once
        slot.in_flight = True
        epoch = self._epoch
        result = self._run(slot.target)
        result.addErrback(self._probe_failed)
        result.addCallback(self._record, slot, epoch)
        result.addErrback(lambda f: log.failure("recording a health result", f))

    def _run(self, target: CheckTarget) -> Deferred[ProbeResult]:
        if self._pool is None:  # run_in_thread=False: the probe runs right here
            return maybeDeferred(self._probe, target)
        probe, stopping = self._probe, self._stopping

        def guarded() -> ProbeResult:
            if stopping.is_set():  # queued when the monitor stopped: do not hold up the stop
                return ProbeResult(False, 0.0, "monitor stopped")
            return probe(target)

        return deferToThreadPool(self._reactor, self._pool, guarded)

    @staticmethod
    def _probe_failed(failure: Failure) -> ProbeResult:
        """A probe that raised (probe never does; an injected one might) counts as failed."""
        return ProbeResult(False, 0.0, f"{failure.type.__name__}: {failure.getErrorMessage()}")

    # --- results

    def _record(self, result: ProbeResult, slot: _Slot, epoch: int) -> None:
        """Fold one result into the target's state (on the reactor thread)."""
        if epoch != self._epoch or self._slots.get(slot.target) is not slot:
            return  # the target was dropped (or the monitor stopped) while the probe ran
        slot.in_flight = False
        check, old = slot.target.check, slot.status
        if old.checks == 0:
            # The first result is all the evidence there is: no rise/fall to wait out.
            health = Health(State.UP if result.ok else State.DOWN)
        else:
            health = transition(old.health, result.ok, check.rise, check.fall)
        serving = _serving(health)
        slot.status = TargetStatus(
            health=health,
            serving=serving,
            last_ok=result.ok,
            last_detail=result.detail,
            last_at=time.time(),
            latency=result.latency,
            checks=old.checks + 1,
        )
        if self._on_result is not None:
            try:
                self._on_result(slot.target, result.ok, serving)
            except Exception:  # a broken listener must not stop this target's checks
                log.failure("health on_result callback for {target}", target=str(slot.target))
        if serving == old.serving:
            return
        log.info(
            "health {target} is {state}: {detail}",
            target=str(slot.target),
            state="up" if serving else "down",
            detail=result.detail,
        )
        if self._on_change is not None:
            try:
                self._on_change(slot.target, serving)
            except Exception:  # a broken listener must not stop this target's checks
                log.failure("health on_change callback for {target}", target=str(slot.target))
