"""Worker processes on sockets their parent bound: started, restarted (bounded), stopped.

``serve`` is one Python process, so one core. Both the forwarding tier (``forward: {workers:
N}``) and the DNS server (``dns: {workers: N}``) run N-1 more processes that inherit listening
sockets bound once by ``serve`` (worker 0). This module is what the two share: binding and
adopting such sockets, and the ``Supervisor`` that starts the workers, restarts those that exit
(at most RESTARTS within RESTART_WINDOW each), signals them, and stops them with ``serve``.
What a worker runs, and how it talks to ``serve``, is the business of the one who launches it.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import task, tcp, udp
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

log = Logger()

BACKLOG = 1024  # as listenTCP is given elsewhere
RESTARTS = 5  # a worker is restarted at most this many times ...
RESTART_WINDOW = 60.0  # ... within this many seconds, then left down (it would only crash again)
# Popen children are not reaped by Twisted (it waits only for the processes it spawned): a
# check this often bounds how long a dead worker goes unnoticed, while the others keep serving.
CHECK_INTERVAL = 0.5
STOP_GRACE = 10.0  # seconds a worker has to exit after SIGTERM before it is killed
UDP_MAX_PACKET = 8192  # what listenUDP reads per datagram by default


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host``:``port``; CannotListenError if not."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listenTCP does
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)  # adoption requires it
    except OSError as exc:
        sock.close()
        raise CannotListenError(host, port, exc) from exc
    return sock


def bind_udp(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket on ``host``:``port``; CannotListenError if not.

    No SO_REUSEPORT: every process reads the one socket (docs/dns-behaviour.md, "More than one
    core", says why)."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CannotListenError(host, port, exc) from exc
    return sock


class SharedPort(tcp.Port):
    """A listening port on a socket other processes accept from too: one accept() per wake-up
    (as nginx's default, multi_accept off). Twisted's own loop takes up to 100+ queued
    connections at once into whichever process woke first, leaving the others idle; one at a
    time, every process woken gets its turn."""

    @property
    def numberAccepts(self) -> int:  # noqa: N802
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:  # noqa: N802
        """Twisted's scaling of its accept loop: not for a shared socket."""


def adopt_tcp(sock: socket.socket, factory: Any, reactor: Any) -> SharedPort:
    """Listen on ``sock`` (shared) with ``factory``: what reactor.adoptStreamPort does, with
    SharedPort. The descriptor is dup'ed: ``sock`` stays open, and shareable, until closed."""
    port = SharedPort._fromListeningDescriptor(reactor, sock.fileno(), sock.family, factory)
    port.startListening()
    return port


def adopt_udp(sock: socket.socket, protocol: Any, reactor: Any) -> udp.Port:
    """Read ``sock`` (shared) with ``protocol``; the descriptor is dup'ed, as adopt_tcp's."""
    port: udp.Port = reactor.adoptDatagramPort(
        sock.fileno(), sock.family, protocol, maxPacketSize=UDP_MAX_PACKET
    )
    return port


@dataclasses.dataclass(frozen=True, slots=True)
class Launch:
    """How to start one worker: its command line, the descriptors it inherits (at their
    numbers), and what to do once Popen returned (the process, or None if it could not start)."""

    argv: list[str]
    fds: tuple[int, ...]
    started: Callable[[subprocess.Popen[bytes] | None], None] | None = None
    preexec: Callable[[], None] | None = None  # run in the child before exec


@dataclasses.dataclass(slots=True)
class WorkerProcess:
    """One worker: its current process and the times it was restarted."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    recent: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    given_up: bool = False

    def alive(self) -> bool:
        """Whether its process is running (not yet reaped)."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The PID of its current (or last) process."""
        return self.process.pid if self.process is not None else None


class Supervisor(service.Service):
    """Starts workers 1..count-1 (serve is worker 0) once the reactor runs, restarts those that
    exit, signals them, and stops them: SIGTERM to each PID it started, SIGKILL if one outlives
    STOP_GRACE; then ``stopped()`` (the parent closes the sockets it shared)."""

    def __init__(
        self,
        count: int,
        launch: Callable[[int], Launch],
        reactor: Any,
        pid: int,
        label: str = "worker",
        stopped: Callable[[], None] | None = None,
        at_once: bool = False,
    ) -> None:
        self.count = count
        self.launch = launch
        self.reactor = reactor
        self.pid = pid  # serve's own, worker 0 in status()
        self.label = label  # how the log calls a worker
        self.stopped = stopped
        # Start with the service, not once the reactor runs: before serve drops root (HAProxy,
        # which binds its own listeners).
        self.at_once = at_once
        self.workers = [WorkerProcess(i) for i in range(1, count)]
        self._checker = task.LoopingCall(self.check)
        self._checker.clock = reactor

    def spawn(self, worker: WorkerProcess) -> None:
        """Start ``worker``'s process (again)."""
        try:
            launch = self.launch(worker.index)
        except OSError as exc:  # no descriptor left for a socketpair, say: check() tries again
            worker.process = None
            log.error("{name} {index}: cannot start: {exc}", name=self.label, index=worker.index,
                      exc=str(exc))  # fmt: skip
            return
        try:
            # stdout and stderr are serve's: the workers' logs go where serve's go. pass_fds
            # makes exactly these descriptors inheritable, at their numbers. A session of their
            # own: a Ctrl-C meant for serve reaches serve alone, which stops them, instead of
            # racing it to end them (and being restarted).
            worker.process = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                pass_fds=launch.fds,
                start_new_session=True,
                preexec_fn=launch.preexec,
            )
        except OSError as exc:
            worker.process = None
            log.error("{name} {index}: cannot start: {exc}", name=self.label, index=worker.index,
                      exc=str(exc))  # fmt: skip
        else:
            log.info("{name} {index} started (pid {pid})", name=self.label, index=worker.index,
                     pid=worker.process.pid)  # fmt: skip
        if launch.started is not None:
            launch.started(worker.process)

    def check(self) -> None:
        """Restart workers that exited, within RESTARTS per RESTART_WINDOW each."""
        now = self.reactor.seconds()
        for worker in self.workers:
            if worker.given_up or worker.alive():
                continue
            code = worker.process.returncode if worker.process is not None else None
            while worker.recent and worker.recent[0] <= now - RESTART_WINDOW:
                worker.recent.popleft()
            if len(worker.recent) >= RESTARTS:
                worker.given_up = True
                log.error("{name} {index} exited (status {code}) after {n} restarts within "
                          "{window:g} s: left down; serve and the other workers go on serving",
                          name=self.label, index=worker.index, code=code, n=RESTARTS,
                          window=RESTART_WINDOW)  # fmt: skip
                continue
            log.warn("{name} {index} exited (status {code}): restarting", name=self.label,
                     index=worker.index, code=code)  # fmt: skip
            worker.recent.append(now)
            worker.restarts += 1
            self.spawn(worker)

    def revive(self) -> None:
        """Start the workers that are not running now, those given up on too (something they
        depend on may have been fixed), with their restart budgets renewed."""
        for worker in self.workers:
            if worker.alive():
                continue
            worker.given_up = False
            worker.recent.clear()
            self.spawn(worker)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to each worker running."""
        for worker in self.workers:
            if worker.process is not None and worker.alive():
                # Popen signals only a child it has not reaped: never a PID reused by another.
                worker.process.send_signal(signum)

    def status(self) -> list[dict[str, Any]]:
        """Every worker, serve itself first (index 0): PID, alive, restarts."""
        out: list[dict[str, Any]] = [{"index": 0, "pid": self.pid, "alive": True, "restarts": 0}]
        for w in self.workers:
            out.append({"index": w.index, "pid": w.pid, "alive": w.alive(), "restarts": w.restarts})
        return out

    def startService(self) -> None:  # noqa: N802
        super().startService()
        # Workers are started once serve runs: if something cannot listen, serve exits with no
        # children left behind.
        if self.at_once:
            self._start_workers()
        else:
            self.reactor.callWhenRunning(self._start_workers)

    def _start_workers(self) -> None:
        if not self.running:
            return
        for worker in self.workers:
            self.spawn(worker)
        self._checker.start(CHECK_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self._checker.running:
            self._checker.stop()
        live = [w.process for w in self.workers if w.process is not None and w.alive()]
        for process in live:
            process.send_signal(signal.SIGTERM)
        done: Deferred[None] = Deferred()
        deadline = self.reactor.seconds() + STOP_GRACE

        def wait() -> None:
            running = [p for p in live if p.poll() is None]
            if running and self.reactor.seconds() < deadline:
                return
            for process in running:
                log.warn("{name} pid {pid} still running {grace:g} s after SIGTERM: killed",
                         name=self.label, pid=process.pid, grace=STOP_GRACE)  # fmt: skip
                process.kill()
                process.wait(timeout=STOP_GRACE)
            waiter.stop()
            if self.stopped is not None:
                self.stopped()
            done.callback(None)

        # Polled, as check() is: the reactor is not told when a Popen child exits.
        waiter = task.LoopingCall(wait)
        waiter.clock = self.reactor
        waiter.start(0.05, now=True)
        return done
