"""More than one forwarding process on the same listeners (pop.yaml ``forward: {workers: N}``).

``serve`` binds each TCP-based listener (tcp, http, https) once, with the socket module, adopts
the socket itself and starts N-1 worker processes that inherit it and adopt it too. The kernel
queues connections on that one socket and whichever process calls accept() first serves them.
Twisted's listenTCP cannot share a port (no SO_REUSEPORT); adopting one socket needs no kernel
option, and because serve keeps its copy open, a worker that exits takes no queued connection
with it: the backlog belongs to the socket, which the other processes go on accepting from.
UDP listeners are served by serve alone.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import task, tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from anycastedge.forward.model import ForwardConfig, Listener

log = Logger()

STREAM_PROTOCOLS = ("tcp", "http", "https")  # what can be shared: accept() on one socket
BACKLOG = 1024  # as listenTCP is given elsewhere
RESTARTS = 5  # a worker is restarted at most this many times ...
RESTART_WINDOW = 60.0  # ... within this many seconds, then left down (it would only crash again)
# Popen children are not reaped by Twisted (it waits only for the processes it spawned): a
# check this often bounds how long a dead worker goes unnoticed, while the others keep serving.
CHECK_INTERVAL = 0.5
STOP_GRACE = 10.0  # seconds a worker has to exit after SIGTERM before it is killed


def stream_listeners(config: ForwardConfig) -> tuple[Listener, ...]:
    """The listeners serve and its workers share."""
    return tuple(lst for lst in config.listeners if lst.protocol in STREAM_PROTOCOLS)


def streams_only(config: ForwardConfig) -> ForwardConfig:
    """What a worker serves: ``config`` without its UDP listeners (serve alone has those)."""
    return dataclasses.replace(config, listeners=stream_listeners(config))


def bind_stream(listener: Listener) -> socket.socket:
    """A listening, non-blocking TCP socket on the listener's address; CannotListenError if not."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listenTCP does
        sock.bind((listener.host, listener.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)  # adoptStreamPort requires it
    except OSError as exc:
        sock.close()
        raise CannotListenError(listener.host, listener.port, exc) from exc
    return sock


def _bound_to(sock: socket.socket, listener: Listener) -> bool:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return False
    return (ipaddress.ip_address(host), port) == (
        ipaddress.ip_address(listener.host),
        listener.port,
    )


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


class SharedSockets:
    """The listening sockets of one process, bound once by serve, by listener name.

    In serve (``worker`` false), a listener with no socket here (one added or moved by a
    reload) is bound the usual way and served by serve alone: the workers already running
    cannot be handed a new socket. In a worker, such a listener is not served at all.
    """

    __slots__ = ("sockets", "worker")

    def __init__(self, sockets: dict[str, socket.socket], worker: bool) -> None:
        self.sockets = sockets
        self.worker = worker

    def bind(self, config: ForwardConfig) -> None:
        """Serve's side: bind every TCP-based listener of ``config`` now (CannotListenError)."""
        try:
            for listener in stream_listeners(config):
                self.sockets[listener.name] = bind_stream(listener)
        except CannotListenError:
            self.close()
            raise

    def fds(self) -> dict[str, int]:
        """The file descriptors a worker is handed, by listener name."""
        return {name: sock.fileno() for name, sock in self.sockets.items()}

    def listen(self, listener: Listener, factory: Any, reactor: Any) -> Any | None:
        """The listening port of ``listener`` for ``factory``; None: not served by this process."""
        sock = self.sockets.get(listener.name)
        if sock is not None and _bound_to(sock, listener):
            # What reactor.adoptStreamPort does, with SharedPort for tcp.Port. The descriptor is
            # dup'ed: the socket here stays open until release().
            port = SharedPort._fromListeningDescriptor(reactor, sock.fileno(), sock.family, factory)
            port.startListening()
            return port
        if self.worker:
            log.warn("listener {name} ({bind}): no socket from serve for this address, not "
                     "served by this worker: a listener added or moved by a reload is served by "
                     "serve alone until serve restarts", name=listener.name,
                     bind=listener.bind)  # fmt: skip
            return None
        log.warn("listener {name} ({bind}): bound after start, served by serve alone: its "
                 "workers serve it once serve restarts", name=listener.name,
                 bind=listener.bind)  # fmt: skip
        return reactor.listenTCP(listener.port, factory, backlog=BACKLOG, interface=listener.host)

    def release(self, name: str, config: ForwardConfig) -> None:
        """The listener stopped here: close this process's copy of its socket, unless ``config``
        (the one being applied) still has it on that address (a reload that changed only its
        protocol, or serve stopping: the supervisor closes the sockets last)."""
        sock = self.sockets.get(name)
        if sock is None:
            return
        if any(lst.name == name and _bound_to(sock, lst) for lst in stream_listeners(config)):
            return
        del self.sockets[name]
        sock.close()

    def close(self) -> None:
        """Close every socket (serve stopping, its workers gone)."""
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


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


# (worker index, file descriptors by listener name) -> the worker's command line
Command = Callable[[int, dict[str, int]], list[str]]


class WorkerSupervisor(service.Service):
    """Starts workers 1..N-1 (serve is worker 0), restarts those that exit, passes SIGHUP on,
    and stops them: SIGTERM to each PID it started, SIGKILL if one outlives STOP_GRACE."""

    def __init__(
        self, config: ForwardConfig, command: Command, shared: SharedSockets, reactor: Any, pid: int
    ) -> None:
        self.config = config  # as serve started: the sockets are bound for its listeners
        self.count = count = config.workers
        self.command = command
        self.shared = shared
        self.reactor = reactor
        self.pid = pid  # serve's own, worker 0 in status()
        self.workers = [WorkerProcess(i) for i in range(1, count)]
        self._checker = task.LoopingCall(self.check)
        self._checker.clock = reactor

    def _spawn(self, worker: WorkerProcess) -> None:
        fds = self.shared.fds()
        try:
            # stdout and stderr are serve's: the workers' logs (and access logs to "-") go where
            # serve's go. pass_fds makes exactly these descriptors inheritable, at their numbers.
            # A session of their own: a Ctrl-C meant for serve reaches serve alone, which stops
            # them, instead of racing it to end them (and being restarted).
            worker.process = subprocess.Popen(
                self.command(worker.index, fds),
                stdin=subprocess.DEVNULL,
                pass_fds=tuple(fds.values()),
                start_new_session=True,
            )
        except OSError as exc:
            worker.process = None
            log.error("worker {index}: cannot start: {exc}", index=worker.index, exc=str(exc))
            return
        log.info("worker {index} started (pid {pid})", index=worker.index,
                 pid=worker.process.pid)  # fmt: skip

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
                log.error("worker {index} exited (status {code}) after {n} restarts within "
                          "{window:g} s: left down; serve and the other workers go on serving",
                          index=worker.index, code=code, n=RESTARTS,
                          window=RESTART_WINDOW)  # fmt: skip
                continue
            log.warn("worker {index} exited (status {code}): restarting", index=worker.index,
                     code=code)  # fmt: skip
            worker.recent.append(now)
            worker.restarts += 1
            self._spawn(worker)

    def reload(self) -> None:
        """Pass a reload on: SIGHUP to each worker running."""
        for worker in self.workers:
            if worker.process is not None and worker.alive():
                worker.process.send_signal(signal.SIGHUP)

    def status(self) -> list[dict[str, Any]]:
        """Every worker, serve itself first (index 0): PID, alive, restarts."""
        out: list[dict[str, Any]] = [{"index": 0, "pid": self.pid, "alive": True, "restarts": 0}]
        for w in self.workers:
            pid = w.process.pid if w.process is not None else None
            out.append({"index": w.index, "pid": pid, "alive": w.alive(), "restarts": w.restarts})
        return out

    def startService(self) -> None:  # noqa: N802
        super().startService()
        # Bound here, not when the app is built: a port in use is then reported as any
        # listener's (CannotListenError from startService).
        self.shared.bind(self.config)
        # Workers are started once serve runs: if something else cannot listen, serve exits
        # with no children left behind.
        self.reactor.callWhenRunning(self._start_workers)

    def _start_workers(self) -> None:
        if not self.running:
            return
        for worker in self.workers:
            self._spawn(worker)
        self._checker.start(CHECK_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self._checker.running:
            self._checker.stop()
        live = [w.process for w in self.workers if w.process is not None and w.alive()]
        for process in live:
            # Popen signals only a child it has not reaped: never a PID reused by another.
            process.send_signal(signal.SIGTERM)
        done: Deferred[None] = Deferred()
        deadline = self.reactor.seconds() + STOP_GRACE

        def wait() -> None:
            running = [p for p in live if p.poll() is None]
            if running and self.reactor.seconds() < deadline:
                return
            for process in running:
                log.warn("worker pid {pid} still running {grace:g} s after SIGTERM: killed",
                         pid=process.pid, grace=STOP_GRACE)  # fmt: skip
                process.kill()
                process.wait(timeout=STOP_GRACE)
            waiter.stop()
            self.shared.close()
            done.callback(None)

        # Polled, as check() is: the reactor is not told when a Popen child exits.
        waiter = task.LoopingCall(wait)
        waiter.clock = self.reactor
        waiter.start(0.05, now=True)
        return done
