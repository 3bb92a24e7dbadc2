"""The worker supervisor with real (trivial) child processes and a fake clock: restarts are
bounded, SIGHUP is passed on, stopping ends every process it started."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock

from anycastedge import supervise
from anycastedge.forward import workers
from anycastedge.forward.model import ForwardConfig, Listener
from anycastedge.forward.workers import SharedPort, SharedSockets, WorkerSupervisor

EXITS = [sys.executable, "-S", "-c", "raise SystemExit(3)"]
# Waits for SIGTERM (or SIGHUP, reported on stdout), then exits 0.
WAITS = [sys.executable, "-S", "-c",
         "import signal, sys\n"
         "signal.signal(signal.SIGHUP, lambda *a: print('hup', flush=True))\n"
         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
         "print('ready', flush=True)\n"
         "while True: signal.pause()\n"]  # fmt: skip


class Reactor(Clock):
    """A fake clock that runs callWhenRunning at once."""

    def callWhenRunning(self, f: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        f(*args)


def supervisor(command: list[str], count: int = 2) -> tuple[WorkerSupervisor, Reactor]:
    reactor = Reactor()
    shared = SharedSockets({}, worker=False)
    sup = WorkerSupervisor(ForwardConfig(workers=count), lambda i, fds: command, shared, reactor, 1)
    return sup, reactor


def test_a_worker_that_keeps_exiting_is_restarted_then_left_down() -> None:
    sup, reactor = supervisor(EXITS)
    sup.startService()
    (w,) = sup.workers
    for restart in range(1, workers.RESTARTS + 1):
        assert w.process is not None
        w.process.wait(timeout=30)  # the child exits by itself: waiting on it, not sleeping
        reactor.advance(workers.CHECK_INTERVAL)
        assert w.restarts == restart and not w.given_up
    assert w.process is not None
    w.process.wait(timeout=30)
    reactor.advance(workers.CHECK_INTERVAL)
    assert w.given_up and w.restarts == workers.RESTARTS
    assert sup.status()[1] == {"index": 1, "pid": w.process.pid, "alive": False,
                               "restarts": workers.RESTARTS}  # fmt: skip
    assert sup.status()[0] == {"index": 0, "pid": 1, "alive": True, "restarts": 0}
    sup.stopService()


def test_revive_starts_a_worker_given_up_on_with_a_new_budget() -> None:
    sup, reactor = supervisor(EXITS)
    sup.startService()
    (w,) = sup.workers
    w.given_up = True
    w.recent.extend([0.0] * workers.RESTARTS)
    assert w.process is not None
    w.process.wait(timeout=30)
    first = w.process
    sup.revive()
    assert w.process is not first and not w.given_up and not w.recent
    sup.stopService()


def test_a_supervisor_at_once_starts_with_its_service_not_with_the_reactor() -> None:
    """HAProxy is started before serve drops root: with the service, not when the reactor runs."""
    reactor = Clock()  # whose callWhenRunning would never be called
    started: list[int] = []

    def launch(index: int) -> supervise.Launch:
        started.append(index)
        return supervise.Launch(EXITS, ())

    sup = supervise.Supervisor(2, launch, reactor, 1, at_once=True)
    sup.startService()
    assert started == [1] and sup.workers[0].process is not None
    sup.workers[0].process.wait(timeout=30)
    sup.stopService()


def test_restarts_are_counted_per_window() -> None:
    sup, reactor = supervisor(EXITS)
    sup.startService()
    (w,) = sup.workers
    for _ in range(workers.RESTARTS * 2):
        assert w.process is not None
        w.process.wait(timeout=30)
        # Spaced out: never RESTARTS within the window, so never given up.
        reactor.advance(workers.RESTART_WINDOW / workers.RESTARTS + workers.CHECK_INTERVAL)
    assert not w.given_up and w.restarts == workers.RESTARTS * 2
    sup.stopService()


def test_sighup_is_passed_on_and_stop_terminates(monkeypatch: pytest.MonkeyPatch) -> None:
    sup, reactor = supervisor(WAITS, count=3)
    spawned: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real(*args, **{**kwargs, "stdout": subprocess.PIPE})
        spawned.append(process)
        return process

    # The children's stdout, to read what they say; the rest as the supervisor asks.
    monkeypatch.setattr(supervise.subprocess, "Popen", popen)
    sup.startService()
    monkeypatch.undo()
    assert len(spawned) == 2
    for process in spawned:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    sup.reload()
    for process in spawned:
        assert process.stdout is not None and process.stdout.readline() == b"hup\n"
    done = sup.stopService()
    fired: list[object] = []
    done.addCallback(fired.append)
    for process in spawned:
        assert process.wait(timeout=30) == 0
    reactor.advance(0.05)
    assert fired == [None]
    assert all(not w.alive() for w in sup.workers)


def test_shared_sockets_adopt_only_their_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        readers: list[object] = []

        class Fake:
            def addReader(self, reader: object) -> None:  # noqa: N802
                readers.append(reader)

        shared = SharedSockets({"web": sock}, worker=True)
        here = Listener("web", "127.0.0.1", port, "http", "")
        elsewhere = Listener("web", "127.0.0.1", port + 1 if port < 65535 else 1, "http", "")
        adopted = shared.listen(here, Factory(), Fake())
        assert isinstance(adopted, SharedPort) and readers == [adopted]
        assert adopted.numberAccepts == 1  # one accept per wake-up, whatever Twisted sets
        adopted.numberAccepts = 120
        assert adopted.numberAccepts == 1
        assert adopted.socket.fileno() != sock.fileno()  # a dup: the original stays shareable
        adopted.socket.close()
        assert shared.listen(elsewhere, Factory(), Fake()) is None  # a worker cannot rebind
        # Kept while the config being applied still has it on that address.
        shared.release("web", ForwardConfig((here,)))
        assert shared.sockets == {"web": sock}
        shared.release("web", ForwardConfig())
        assert shared.sockets == {}
        assert sock.fileno() == -1  # closed
