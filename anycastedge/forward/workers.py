"""More than one forwarding process on the same listeners (pop.yaml ``forward: {workers: N}``).

``serve`` binds each TCP-based listener (tcp, http, https) once, with the socket module, adopts
the socket itself and starts N-1 worker processes that inherit it and adopt it too. The kernel
queues connections on that one socket and whichever process calls accept() first serves them.
Twisted's listenTCP cannot share a port (no SO_REUSEPORT); adopting one socket needs no kernel
option, and because serve keeps its copy open, a worker that exits takes no queued connection
with it: the backlog belongs to the socket, which the other processes go on accepting from.
UDP listeners are served by serve alone. The processes are supervised by
``anycastedge.supervise``, as the DNS server's workers are.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import signal
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from anycastedge.forward.model import ForwardConfig, Listener
from anycastedge.supervise import (
    BACKLOG,
    CHECK_INTERVAL,
    RESTART_WINDOW,
    RESTARTS,
    STOP_GRACE,
    Launch,
    SharedPort,
    Supervisor,
    WorkerProcess,
    adopt_tcp,
    bind_tcp,
)

__all__ = [
    "BACKLOG",
    "CHECK_INTERVAL",
    "RESTARTS",
    "RESTART_WINDOW",
    "STOP_GRACE",
    "SharedPort",
    "SharedSockets",
    "WorkerProcess",
    "WorkerSupervisor",
    "bind_stream",
    "stream_listeners",
    "streams_only",
]

log = Logger()

STREAM_PROTOCOLS = ("tcp", "http", "https")  # what can be shared: accept() on one socket


def stream_listeners(config: ForwardConfig) -> tuple[Listener, ...]:
    """The listeners serve and its workers share."""
    return tuple(lst for lst in config.listeners if lst.protocol in STREAM_PROTOCOLS)


def streams_only(config: ForwardConfig) -> ForwardConfig:
    """What a worker serves: ``config`` without its UDP listeners (serve alone has those)."""
    return dataclasses.replace(config, listeners=stream_listeners(config))


def bind_stream(listener: Listener) -> socket.socket:
    """A listening, non-blocking TCP socket on the listener's address; CannotListenError if not."""
    return bind_tcp(listener.host, listener.port)


def _bound_to(sock: socket.socket, listener: Listener) -> bool:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return False
    return (ipaddress.ip_address(host), port) == (
        ipaddress.ip_address(listener.host),
        listener.port,
    )


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
            # The descriptor is dup'ed: the socket here stays open until release().
            return adopt_tcp(sock, factory, reactor)
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


# (worker index, file descriptors by listener name) -> the worker's command line
Command = Callable[[int, dict[str, int]], list[str]]


class WorkerSupervisor(Supervisor):
    """Starts forwarding workers 1..N-1 (serve is worker 0) on the sockets of ``shared``,
    restarts those that exit, passes SIGHUP on, and stops them (anycastedge.supervise)."""

    def __init__(
        self, config: ForwardConfig, command: Command, shared: SharedSockets, reactor: Any, pid: int
    ) -> None:
        self.config = config  # as serve started: the sockets are bound for its listeners
        self.command = command
        self.shared = shared
        super().__init__(config.workers, self._launch, reactor, pid, stopped=shared.close)

    def _launch(self, index: int) -> Launch:
        fds = self.shared.fds()
        return Launch(self.command(index, fds), tuple(fds.values()))

    def reload(self) -> None:
        """Pass a reload on: SIGHUP to each worker running."""
        self.signal(signal.SIGHUP)

    def startService(self) -> None:  # noqa: N802
        # Bound here, not when the app is built: a port in use is then reported as any
        # listener's (CannotListenError from startService).
        self.shared.bind(self.config)
        super().startService()
