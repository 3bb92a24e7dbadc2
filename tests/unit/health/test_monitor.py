"""The GSLB health monitor, driven by task.Clock and injected fake probes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from anycastedge.health.check import CheckTarget, HealthCheck
from anycastedge.health.monitor import UNCHECKED, HealthMonitor
from anycastedge.health.probes import ProbeResult
from anycastedge.health.state import State

CHECK = HealthCheck(protocol="HTTP", port=80, interval=10.0, timeout=2.0, rise=2, fall=3)


def target(n: int, check: HealthCheck = CHECK) -> CheckTarget:
    """A documentation address (never contacted: the probes here are fakes)."""
    return CheckTarget(f"192.0.2.{n}", check)


class FakeProbe:
    """Answers from a per-target health switch and records every call with the clock's time."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.healthy: dict[CheckTarget, bool] = {}
        self.calls: list[tuple[float, CheckTarget]] = []

    def __call__(self, t: CheckTarget) -> ProbeResult:
        self.calls.append((self.clock.seconds(), t))
        ok = self.healthy.get(t, True)
        return ProbeResult(ok, 0.01, "status 200" if ok else "status 503")

    def times(self, t: CheckTarget) -> list[float]:
        return [at for at, called in self.calls if called == t]


class PendingProbe:
    """A probe whose results arrive only when the test fires them (a Deferred per call)."""

    def __init__(self) -> None:
        self.pending: list[tuple[CheckTarget, Deferred[ProbeResult]]] = []

    def __call__(self, t: CheckTarget) -> Deferred[ProbeResult]:
        d: Deferred[ProbeResult] = Deferred()
        self.pending.append((t, d))
        return d

    def finish(self, ok: bool = True) -> None:
        """Deliver the oldest pending result."""
        _, d = self.pending.pop(0)
        d.callback(ProbeResult(ok, 0.01, "late" if ok else "late failure"))


Changes = list[tuple[CheckTarget, bool]]


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def changes() -> Changes:
    return []


@pytest.fixture
def fake(clock: task.Clock) -> FakeProbe:
    return FakeProbe(clock)


@pytest.fixture
def monitor(clock: task.Clock, fake: FakeProbe, changes: Changes) -> Iterator[HealthMonitor]:
    """A started monitor that probes synchronously with ``fake`` and records on_change calls."""
    m = HealthMonitor(
        clock, on_change=lambda t, s: changes.append((t, s)), probe=fake, run_in_thread=False
    )
    m.startService()
    yield m
    if m.running:
        m.stopService()


def pending_monitor(clock: task.Clock, probe: PendingProbe, changes: Changes) -> HealthMonitor:
    m = HealthMonitor(
        clock,
        on_change=lambda t, s: changes.append((t, s)),
        probe=probe,  # type: ignore[arg-type]  # a test probe may return a Deferred
        run_in_thread=False,
    )
    m.startService()
    return m


def test_first_checks_spread_over_the_interval(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """Targets added together start at i*interval/n, then run every interval from their start."""
    targets = [target(i) for i in range(4)]
    monitor.update(targets)
    clock.pump([0.0] + [0.5] * 59)  # 29.5 seconds in half-second steps
    for i, t in enumerate(targets):
        first = i * 2.5
        assert fake.times(t) == [first, first + 10, first + 20], t


def test_new_targets_are_checked_at_once(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """A zone load starts checking right away, not on the first query or after an interval."""
    clock.advance(100)
    monitor.update([target(1)])
    clock.advance(0)
    assert fake.calls == [(100.0, target(1))]


def test_no_checks_before_start_and_all_begin_at_start(clock: task.Clock, fake: FakeProbe) -> None:
    """update() before startService only records targets; startService begins their checks."""
    m = HealthMonitor(clock, probe=fake, run_in_thread=False)
    m.update([target(1), target(2)])
    assert clock.getDelayedCalls() == []
    clock.advance(50)
    assert fake.calls == []
    m.startService()
    clock.pump([0.0, 5.0])
    assert fake.calls == [(50.0, target(1)), (55.0, target(2))]
    m.stopService()


def test_unknown_and_unchecked_targets_are_serving(monitor: HealthMonitor) -> None:
    """Before any result a target is assumed up (as gdnsd does); unknown ones too."""
    assert monitor.serving(target(9))
    assert monitor.status(target(9)) == UNCHECKED
    monitor.update([target(1)])  # scheduled, but the clock has not moved: no result yet
    assert monitor.serving(target(1))
    assert monitor.status(target(1)).health.state == State.INIT
    assert monitor.statuses() == {target(1): UNCHECKED}


def test_first_success_sets_up_without_a_change(
    monitor: HealthMonitor, clock: task.Clock, changes: Changes
) -> None:
    """The first passing result is UP at once (no rise to wait out); serving did not flip."""
    monitor.update([target(1)])
    clock.advance(0)
    status = monitor.status(target(1))
    assert status.health.state == State.UP
    assert status.serving
    assert (status.last_ok, status.last_detail, status.latency, status.checks) == (
        True,
        "status 200",
        0.01,
        1,
    )
    assert status.last_at is not None
    assert changes == []


def test_first_failure_sets_down_and_reports_it(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe, changes: Changes
) -> None:
    """The first failing result is DOWN at once (no fall to wait out) and on_change says so."""
    fake.healthy[target(1)] = False
    monitor.update([target(1)])
    clock.advance(0)
    assert monitor.status(target(1)).health.state == State.DOWN
    assert not monitor.serving(target(1))
    assert changes == [(target(1), False)]


def test_fall_then_rise_counts(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe, changes: Changes
) -> None:
    """After the first result, ``fall`` failures take a target down and ``rise`` passes up."""
    t = target(1)
    monitor.update([t])
    clock.advance(0)  # UP
    fake.healthy[t] = False
    seen = []
    for _ in range(3):
        clock.advance(10)
        seen.append((monitor.status(t).health.state, monitor.serving(t)))
    assert seen == [(State.FALLING, True), (State.FALLING, True), (State.DOWN, False)]
    fake.healthy[t] = True
    seen = []
    for _ in range(2):
        clock.advance(10)
        seen.append((monitor.status(t).health.state, monitor.serving(t)))
    assert seen == [(State.RISING, False), (State.UP, True)]
    assert changes == [(t, False), (t, True)]
    assert monitor.status(t).checks == 6


def test_on_change_only_when_serving_flips(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe, changes: Changes
) -> None:
    """Flapping shorter than fall or rise never reaches on_change; each real flip does, once."""
    t = target(1)
    monitor.update([t])
    clock.advance(0)
    for ok in [False, True, False, False, True, False, False, False, False, True, True, True]:
        fake.healthy[t] = ok
        clock.advance(10)
    assert changes == [(t, False), (t, True)]


def test_a_probe_that_raises_counts_as_a_failure(clock: task.Clock, changes: Changes) -> None:
    """An exception from the probe is a failed result with its type in the detail."""

    def broken(t: CheckTarget) -> ProbeResult:
        raise OSError("boom")

    m = HealthMonitor(
        clock, on_change=lambda t, s: changes.append((t, s)), probe=broken, run_in_thread=False
    )
    m.startService()
    m.update([target(1)])
    clock.advance(0)
    status = m.status(target(1))
    assert (status.last_ok, status.last_detail, status.serving) == (False, "OSError: boom", False)
    assert changes == [(target(1), False)]
    clock.advance(10)  # and checks go on
    assert m.status(target(1)).checks == 2
    m.stopService()


def test_a_failing_on_change_does_not_stop_checks(clock: task.Clock, fake: FakeProbe) -> None:
    """A listener that raises is logged; the target's state and schedule carry on."""

    def listener(t: CheckTarget, serving: bool) -> None:
        raise RuntimeError("listener bug")

    m = HealthMonitor(clock, on_change=listener, probe=fake, run_in_thread=False)
    m.startService()
    fake.healthy[target(1)] = False
    m.update([target(1)])
    clock.advance(0)
    clock.advance(10)
    assert m.status(target(1)).checks == 2
    assert not m.serving(target(1))
    m.stopService()


def test_kept_targets_keep_state_and_schedule(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """A reload that still wants a target changes nothing about it; the new one starts now."""
    old, new = target(1), target(2)
    fake.healthy[old] = False
    monitor.update([old])
    clock.advance(0)
    clock.advance(4)
    before = monitor.status(old)
    monitor.update([new, old])
    assert monitor.status(old) is before
    clock.pump([0.0] + [1.0] * 16)  # to t=20
    assert fake.times(old) == [0.0, 10.0, 20.0]
    assert fake.times(new) == [4.0, 14.0]  # alone among the added: offset 0
    assert monitor.status(old).checks == 3


def test_equal_targets_share_one_probe(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """Two records naming the same address and check are one target with one probe."""
    same = CheckTarget("192.0.2.1", HealthCheck(protocol="HTTP", port=80, rise=2, fall=3))
    assert same == target(1) and same is not target(1)
    monitor.update([target(1), same])
    clock.pump([0.0, 5.0, 5.0])
    assert [at for at, _ in fake.calls] == [0.0, 10.0]
    assert list(monitor.statuses()) == [target(1)]


def test_removed_targets_stop_and_are_forgotten(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """A target no longer wanted has no pending check and no status left."""
    monitor.update([target(1), target(2)])
    clock.advance(0)
    monitor.update([target(2)])
    clock.pump([5.0] * 6)
    assert fake.times(target(1)) == [0.0]
    assert target(1) not in monitor.statuses()
    assert monitor.status(target(1)) == UNCHECKED
    monitor.update([])
    assert clock.getDelayedCalls() == []


def test_late_results_of_removed_targets_are_ignored(clock: task.Clock) -> None:
    """A probe still running when its target is dropped changes nothing when it answers."""
    probe, changes = PendingProbe(), []
    m = pending_monitor(clock, probe, changes)
    m.update([target(1)])
    clock.advance(0)
    m.update([])
    probe.finish(ok=False)
    assert m.statuses() == {}
    assert changes == []
    assert clock.getDelayedCalls() == []
    m.stopService()


def test_late_result_does_not_touch_a_readded_target(clock: task.Clock) -> None:
    """Dropped and added again, a target starts afresh: the old probe's result is not its own."""
    probe, changes = PendingProbe(), []
    m = pending_monitor(clock, probe, changes)
    m.update([target(1)])
    clock.advance(0)
    m.update([])
    m.update([target(1)])
    clock.advance(0)
    assert len(probe.pending) == 2  # the fresh target does not wait for the forgotten probe
    probe.finish(ok=False)  # the forgotten one
    assert m.status(target(1)) == UNCHECKED
    probe.finish(ok=True)
    assert m.status(target(1)).checks == 1
    assert changes == []
    m.stopService()


def test_no_overlapping_probes_of_one_target(clock: task.Clock) -> None:
    """While a probe runs, the target's due rounds are skipped; the schedule itself holds."""
    probe, changes = PendingProbe(), []
    m = pending_monitor(clock, probe, changes)
    m.update([target(1)])
    clock.advance(0)
    clock.pump([10.0, 10.0, 10.0])
    assert len(probe.pending) == 1
    probe.finish(ok=True)
    assert m.status(target(1)).checks == 1
    clock.advance(9.5)
    assert probe.pending == []  # not at once: at the next round of the original schedule
    clock.advance(0.5)
    assert len(probe.pending) == 1
    m.stopService()


def test_stop_cancels_timers_and_ignores_late_results(clock: task.Clock) -> None:
    """stopService leaves no delayed call behind, and a probe answering afterwards is ignored."""
    probe, changes = PendingProbe(), []
    m = pending_monitor(clock, probe, changes)
    m.update([target(i) for i in range(5)])
    clock.advance(0)
    m.stopService()
    assert clock.getDelayedCalls() == []
    probe.finish(ok=False)
    assert m.status(target(0)) == UNCHECKED
    assert changes == []


def test_restart_resumes_checks(clock: task.Clock, fake: FakeProbe) -> None:
    """A stopped monitor keeps its targets and their states; starting it again resumes checks."""
    m = HealthMonitor(clock, probe=fake, run_in_thread=False)
    m.startService()
    m.update([target(1)])
    clock.advance(0)
    m.stopService()
    clock.advance(30)
    assert fake.times(target(1)) == [0.0]
    m.startService()
    clock.advance(0)
    assert fake.times(target(1)) == [0.0, 30.0]
    assert m.status(target(1)).checks == 2
    m.stopService()


class ThreadedClock(task.Clock):
    """A Clock with callFromThread: results from pool threads queue up for the test to apply."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Callable[..., object], tuple[object, ...]]] = (
            queue.Queue()
        )

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:  # noqa: N802
        self.from_threads.put((f, args))

    def run_one_from_thread(self) -> None:
        f, args = self.from_threads.get(timeout=10)
        f(*args)


def test_probes_run_in_the_pool_and_results_apply_on_the_reactor_thread() -> None:
    """With run_in_thread the probe runs on a pool thread; its result is applied via the reactor."""
    clock = ThreadedClock()
    reactor_thread = threading.get_ident()
    probe_threads: list[int] = []
    applied_on: list[int] = []

    def probe(t: CheckTarget) -> ProbeResult:
        probe_threads.append(threading.get_ident())
        return ProbeResult(False, 0.01, "status 503")

    def on_change(t: CheckTarget, serving: bool) -> None:
        applied_on.append(threading.get_ident())

    m = HealthMonitor(clock, on_change=on_change, probe=probe, workers=2)
    m.startService()
    m.update([target(1)])
    clock.advance(0)
    clock.run_one_from_thread()
    assert probe_threads and probe_threads[0] != reactor_thread
    assert applied_on == [reactor_thread]
    assert not m.serving(target(1))
    m.stopService()
    assert clock.getDelayedCalls() == []


def test_a_late_reactor_skips_missed_rounds(
    monitor: HealthMonitor, clock: task.Clock, fake: FakeProbe
) -> None:
    """Rounds missed while the reactor was busy are skipped, not fired in a burst."""
    monitor.update([target(1)])
    clock.advance(0)
    clock.advance(35)  # one late round, at 35; the ones due at 20 and 30 are gone
    clock.pump([4.0, 1.0])  # and back on the original schedule: 40
    assert fake.times(target(1)) == [0.0, 35.0, 40.0]
