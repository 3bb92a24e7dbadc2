"""More than one DNS process on the same sockets (pop.yaml ``dns: {workers: N}``).

``serve`` (worker 0) binds every ``dns.listen`` address once, UDP and TCP, reads the sockets
itself and starts workers 1..N-1 (``anycastedge dns worker``) that inherit them and read them too:
the kernel hands each datagram, and each connection, to whichever process reads or accepts
first. Each worker also inherits one end of a socketpair, its link to serve, over which

- serve sends a ``Hello`` first (the configuration to answer with, the serials it serves, the GSLB
  health it sees), a ``Reload`` after each (re)load it accepted, and ``Health`` whenever a check
  changes what it serves;
- the worker sends ``Loaded`` after its start and after each reload, and a snapshot of its
  counters every COUNTERS_INTERVAL seconds.

So every process answers from the same zone files with the same serials (serve alone keeps
serials.json; a worker is handed the serials and never touches the file), and the same GSLB
health (serve alone runs the checks). Messages are pickled: both ends are the same program run by
the same user, and the socketpair is private to the two processes.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import protocol, task
from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.service import ReloadResult, ZoneService
from anycastedge.dns.totals import add_counters, queries, total
from anycastedge.dns.zone import ZoneSet
from anycastedge.health.check import CheckTarget
from anycastedge.statedir.serials import ServedSerial
from anycastedge.supervise import (
    Launch,
    Supervisor,
    WorkerProcess,
    adopt_tcp,
    adopt_udp,
    bind_tcp,
    bind_udp,
)

log = Logger()

COUNTERS_INTERVAL = 1.0  # a worker's counters reach /metrics at most this much later
RELOAD_WAIT = 600.0  # seconds POST /reload waits for the workers' reloads (a large zone set)
HELLO_WAIT = 60.0  # seconds a worker waits for serve's first message before giving up
MAX_MESSAGE = 1 << 28  # a counters snapshot of many zones is large; anything beyond is broken
_LENGTH = struct.Struct("!I")  # as Int32StringReceiver frames


# --- the messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """serve's first message to a worker: everything it needs to answer as serve does."""

    config: Any  # the PopConfig the app builds a worker from (its DNS part)
    generation: int  # serve's (re)loads accepted so far
    serials: dict[str, ServedSerial]  # what serve serves: the worker's load continues from it
    health: Health  # serve's GSLB health now


@dataclass(frozen=True, slots=True)
class Reload:
    """serve accepted (re)load number ``generation``: reload, continuing from its serials."""

    generation: int
    trigger: str
    serials: dict[str, ServedSerial]


@dataclass(frozen=True, slots=True)
class Health:
    """Whether each GSLB target is serving, as serve's checks say (the whole map), and how many
    changes serve had made to it: the worker tells serve which version it follows."""

    version: int
    states: dict[CheckTarget, bool]


@dataclass(frozen=True, slots=True)
class HealthApplied:
    """A worker follows serve's health ``version`` from now on."""

    version: int


@dataclass(frozen=True, slots=True)
class Loaded:
    """A worker's outcome of its start (generation of its Hello) or of a Reload."""

    generation: int
    result: ReloadResult
    serials: dict[str, int]  # the serial each zone is answered with


def served_serials(zones: ZoneSet) -> dict[str, int]:
    """The serial of each zone of ``zones``, by name with the final dot."""
    return {zone.origin.to_text(): zone.serial for zone in zones}


def encode(message: object) -> bytes:
    """One framed message."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def send_blocking(sock: socket.socket, message: object) -> None:
    """Send ``message`` on a socket not (yet) in the reactor."""
    sock.sendall(encode(message))


def receive_blocking(sock: socket.socket, timeout: float) -> object:
    """The next message on a socket not (yet) in the reactor; OSError (TimeoutError) if none
    arrives within ``timeout`` or the other end closes."""
    sock.settimeout(timeout)
    try:
        (length,) = _LENGTH.unpack(_read_exactly(sock, _LENGTH.size))
        if length > MAX_MESSAGE:
            raise OSError(f"message of {length} bytes from serve: over {MAX_MESSAGE}")
        return pickle.loads(_read_exactly(sock, length))
    finally:
        sock.settimeout(None)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise OSError("serve closed the link")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Channel(Int32StringReceiver):
    """One end of the link between serve and a worker: pickled messages, length-prefixed."""

    MAX_LENGTH = MAX_MESSAGE
    transport: Any  # a UNIX stream transport

    def __init__(self, received: Callable[[object], None], lost: Callable[[], None]) -> None:
        self.received = received
        self.lost = lost

    def send(self, message: object) -> None:
        """Queue ``message`` for the other end."""
        if self.transport is not None and self.connected:
            self.transport.write(encode(message))

    def stringReceived(self, string: bytes) -> None:  # noqa: N802
        try:
            message = pickle.loads(string)
        except Exception:
            log.failure("unreadable message on a DNS worker link: closing it")
            self.transport.loseConnection()
            return
        self.received(message)

    def lengthLimitExceeded(self, length: int) -> None:  # noqa: N802
        log.error("message of {length} bytes on a DNS worker link: closing it", length=length)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.lost()


class _Once(protocol.Factory):
    """Hands out one protocol: an adopted connection needs a factory."""

    def __init__(self, proto: protocol.Protocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> protocol.Protocol:  # noqa: N802
        return self.proto


def adopt_channel(sock: socket.socket, channel: Channel, reactor: Any) -> None:
    """Read and write ``sock`` (a socketpair end) through ``channel``; ``sock`` is closed (the
    reactor has its own descriptor)."""
    sock.setblocking(False)
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, _Once(channel))
    sock.close()


def adopt_all(
    sockets: Mapping[str, socket.socket], udp_protocol: Callable[[], Any], stream: Any, reactor: Any
) -> list[Any]:
    """Read each of ``sockets``: a UDP one with a new ``udp_protocol()``, a TCP one with
    ``stream``; the listening ports (each on a dup of its socket)."""
    ports: list[Any] = []
    for sock in sockets.values():
        if sock.type == socket.SOCK_DGRAM:
            ports.append(adopt_udp(sock, udp_protocol(), reactor))
        else:
            ports.append(adopt_tcp(sock, stream, reactor))
    return ports


class _Adopted(service.Service):
    """A worker's DNS sockets, read while the service runs."""

    def __init__(
        self,
        sockets: dict[str, socket.socket],
        udp_protocol: Callable[[], Any],
        stream: Any,
        reactor: Any,
    ) -> None:
        self.sockets, self.udp_protocol, self.stream, self.reactor = (
            sockets, udp_protocol, stream, reactor)  # fmt: skip
        self.ports: list[Any] = []

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.ports = adopt_all(self.sockets, self.udp_protocol, self.stream, self.reactor)
        for sock in self.sockets.values():
            sock.close()  # the ports have their own descriptors
        self.sockets = {}

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        for port in self.ports:
            port.stopListening()
        self.ports = []


def adopt_dns(
    sockets: dict[str, socket.socket], udp_protocol: Callable[[], Any], stream: Any, reactor: Any
) -> service.Service:
    """A service that reads ``sockets`` (a worker's, inherited from serve) once started."""
    return _Adopted(sockets, udp_protocol, stream, reactor)


# --- serve's side --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Session:
    """One process of a worker, as serve hears it."""

    pid: int
    channel: Channel | None = None
    counters: DnsCounters = field(default_factory=DnsCounters)  # its latest snapshot
    counters_at: float | None = None  # reactor time it arrived


@dataclass(slots=True)
class Link:
    """What serve knows of worker ``index`` across its restarts."""

    index: int
    session: Session | None = None
    retired: DnsCounters = field(default_factory=DnsCounters)  # its earlier processes' counts
    loaded: Loaded | None = None  # its last report
    health_version: int | None = None  # the version of serve's health it follows

    def counters(self) -> DnsCounters:
        """Everything this worker's processes counted (up to each one's last snapshot)."""
        current = self.session.counters if self.session is not None else DnsCounters()
        return total([self.retired, current])


# (worker index, its DNS sockets' descriptors by name, its link's descriptor) -> command line
DnsCommand = Callable[[int, dict[str, int], int], list[str]]


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One process answering DNS, as /status and POST /reload list it."""

    index: int  # 0: serve itself
    pid: int | None
    alive: bool
    restarts: int
    queries: int  # client queries it answered (a worker: up to its last snapshot)
    counters_age: float | None  # seconds since its last snapshot (serve: 0)
    generation: int | None  # serve's (re)load it last answered (serve: its own count)
    health_version: int | None  # serve's GSLB health version it follows
    last_reload: ReloadResult | None
    serials: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """The JSON form."""
        last = self.last_reload
        return {
            "index": self.index,
            "pid": self.pid,
            "alive": self.alive,
            "restarts": self.restarts,
            "queries": self.queries,
            "counters_age_seconds": self.counters_age,
            "generation": self.generation,
            "health_version": self.health_version,
            "last_reload": None if last is None else last.as_json(),
            "serials": self.serials,
        }


def serve_entry(
    pid: int,
    last: ReloadResult | None,
    zones: ZoneSet,
    counters: DnsCounters,
    generation: int | None = None,
    health_version: int | None = None,
) -> dict[str, Any]:
    """serve itself (index 0) as /status and POST /reload list it among the DNS processes."""
    return ProcessStatus(0, pid, True, 0, queries(counters), 0.0, generation, health_version, last,
                         served_serials(zones)).as_json()  # fmt: skip


class DnsWorkers(Supervisor):
    """serve's side: binds the DNS sockets (startService), reads them with ``udp_protocol()``
    and ``stream``, and supervises workers 1..count-1 on them: their links, reloads, health and
    counters."""

    def __init__(
        self,
        count: int,
        listen: tuple[tuple[str, int], ...],
        command: DnsCommand,
        reactor: Any,
        zones: ZoneService,
        counters: DnsCounters,
        config: Any,
        health: Callable[[], Mapping[CheckTarget, bool]],
        udp_protocol: Callable[[], Any],
        stream: Any,
    ) -> None:
        super().__init__(count, self._launch, reactor, os.getpid(), "dns worker", self._close)
        self.listen = listen
        self.command = command
        self.zones = zones
        self.own = counters  # serve's
        self.config = config
        self.health = health
        self.udp_protocol = udp_protocol
        self.stream = stream
        self.sockets: dict[str, socket.socket] = {}
        self.ports: list[Any] = []
        self.links = {w.index: Link(w.index) for w in self.workers}
        self.generation = 0  # serve's accepted (re)loads; each is passed on as a Reload
        self.health_version = 0  # changes of serve's GSLB health; each is passed on as Health
        self._health_sent: dict[CheckTarget, bool] = {}
        self._waiters: list[tuple[int, Deferred[bool], DelayedCall]] = []

    # --- sockets

    def startService(self) -> None:  # noqa: N802
        # Bound here, not when the app is built: a port in use is reported as if listenUDP had
        # failed (CannotListenError from startService).
        try:
            for i, (host, port) in enumerate(self.listen):
                self.sockets[f"udp{i}"] = bind_udp(host, port)
                self.sockets[f"tcp{i}"] = bind_tcp(host, port)
        except Exception:
            self._close()
            raise
        self.ports = adopt_all(self.sockets, self.udp_protocol, self.stream, self.reactor)
        super().startService()

    def stopService(self) -> Deferred[None]:  # noqa: N802
        for port in self.ports:
            port.stopListening()
        self.ports = []
        for waiter in list(self._waiters):
            self._finish(waiter, False)
        return super().stopService()

    def _close(self) -> None:
        """Every worker gone: close the sockets and the links."""
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        for link in self.links.values():
            if link.session is not None and link.session.channel is not None:
                link.session.channel.transport.loseConnection()

    # --- workers

    def _launch(self, index: int) -> Launch:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {name: sock.fileno() for name, sock in self.sockets.items()}
        argv = self.command(index, fds, theirs.fileno())

        def started(process: Any) -> None:
            theirs.close()  # the worker has its copy
            if process is None:
                mine.close()
                return
            link = self.links[index]
            session = link.session = Session(process.pid)
            # What the previous process reported is not this one's: unknown until it reports.
            link.loaded = link.health_version = None
            channel = Channel(
                lambda message: self._received(link, session, message),
                lambda: self._lost(link, session),
            )
            adopt_channel(mine, channel, self.reactor)
            session.channel = channel
            health = Health(self.health_version, dict(self.health()))
            channel.send(Hello(self.config, self.generation, dict(self.zones.serials), health))

        return Launch(argv, (*fds.values(), theirs.fileno()), started)

    def _received(self, link: Link, session: Session, message: object) -> None:
        if isinstance(message, DnsCounters):
            session.counters = message
            session.counters_at = self.reactor.seconds()
        elif isinstance(message, HealthApplied):
            link.health_version = message.version
        elif isinstance(message, Loaded):
            link.loaded = message
            if not message.result.ok:
                log.error("dns worker {index} (pid {pid}) could not load the zones; it serves "
                          "what it served before, if anything", index=link.index,
                          pid=session.pid)  # fmt: skip
            self._settle()
        else:
            log.error("dns worker {index}: unexpected message {kind}", index=link.index,
                      kind=type(message).__name__)  # fmt: skip

    def _lost(self, link: Link, session: Session) -> None:
        # Its last snapshot is kept: the counters of a worker never go down across its restarts
        # (only what it counted since that snapshot is lost).
        add_counters(link.retired, session.counters)
        session.counters = DnsCounters()
        session.channel = None
        if link.session is session:
            link.session = None

    def check(self) -> None:
        """Restart workers that exited (Supervisor.check); a worker left down no longer holds
        up a reload's answer."""
        super().check()
        self._settle()

    # --- what serve passes on

    def swapped(self) -> None:
        """serve accepted a (re)load: every worker reloads, continuing from serve's serials."""
        self.generation += 1
        last = self.zones.reloads.last
        message = Reload(self.generation, last.trigger if last else "", dict(self.zones.serials))
        for worker in self.workers:
            if worker.given_up:
                # It may have failed on zone files that load now: give it its restarts again.
                worker.given_up = False
                worker.recent.clear()
        for link in self.links.values():
            if link.session is not None and link.session.channel is not None:
                link.session.channel.send(message)

    def health_changed(self) -> None:
        """A GSLB check changed what serve answers: every worker gets the whole map."""
        states = dict(self.health())
        if states == self._health_sent:
            return  # (a reload that changed no target, a change of one not in service)
        self._health_sent = states
        self.health_version += 1
        message = Health(self.health_version, states)
        for link in self.links.values():
            if link.session is not None and link.session.channel is not None:
                link.session.channel.send(message)

    def settled(self) -> Deferred[bool]:
        """Fires once every worker answered serve's latest (re)load (or was left down), at the
        latest after RELOAD_WAIT: whether every one that answered reloaded OK."""
        done: Deferred[bool] = Deferred()
        timer = self.reactor.callLater(RELOAD_WAIT, self._expire, done)
        self._waiters.append((self.generation, done, timer))
        self._settle()
        return done

    def _expire(self, done: Deferred[bool]) -> None:
        for waiter in self._waiters:
            if waiter[1] is done:
                log.warn("a DNS worker has not reloaded within {wait:g} s", wait=RELOAD_WAIT)
                self._finish(waiter, False)
                return

    def _finish(self, waiter: tuple[int, Deferred[bool], DelayedCall], ok: bool) -> None:
        self._waiters.remove(waiter)
        if waiter[2].active():
            waiter[2].cancel()
        waiter[1].callback(ok)

    def _settle(self) -> None:
        for waiter in list(self._waiters):
            generation = waiter[0]
            pending = [
                w
                for w in self.workers
                if not w.given_up and self._answer(w, generation) is None
            ]  # fmt: skip
            if not pending:
                self._finish(waiter, all(self._answer(w, generation) is not False
                                         for w in self.workers))  # fmt: skip

    def _answer(self, worker: WorkerProcess, generation: int) -> bool | None:
        """Whether ``worker`` (re)loaded OK at ``generation`` or later; None: not yet, or down."""
        if worker.given_up:
            return None
        loaded = self.links[worker.index].loaded
        if loaded is None or loaded.generation < generation:
            return None
        return loaded.result.ok

    # --- what /status, /metrics and POST /reload read

    def totals(self) -> DnsCounters:
        """The counters of every process: serve's own, each worker's latest snapshot."""
        return total([self.own, *(link.counters() for link in self.links.values())])

    def processes(self) -> list[dict[str, Any]]:
        """serve (index 0) and each worker: PID, alive, restarts, queries answered, the age of
        its counters, its last (re)load with the generation it answered, its serials."""
        zones = self.zones
        out = [serve_entry(self.pid, zones.reloads.last, zones.zones, self.own, self.generation,
                           self.health_version)]  # fmt: skip
        now = self.reactor.seconds()
        for worker in self.workers:
            link = self.links[worker.index]
            at = link.session.counters_at if link.session is not None else None
            loaded = link.loaded
            status = ProcessStatus(
                index=worker.index,
                pid=worker.pid,
                alive=worker.alive(),
                restarts=worker.restarts,
                queries=queries(link.counters()),
                counters_age=None if at is None else round(now - at, 3),
                generation=loaded.generation if loaded else None,
                health_version=link.health_version,
                last_reload=loaded.result if loaded else None,
                serials=dict(loaded.serials) if loaded else {},
            )
            out.append(status.as_json())
        return out


# --- a worker's side -----------------------------------------------------------------------------


class HealthTable:
    """GSLB health as serve last sent it: what a worker's answers follow (it runs no checks)."""

    __slots__ = ("states", "version")

    def __init__(self, health: Health) -> None:
        self.states = dict(health.states)
        self.version = health.version

    def serving(self, target: CheckTarget) -> bool:
        """Whether ``target`` may be answered; one serve has not checked yet counts as up, as in
        serve (a (re)load never blackholes a name)."""
        return self.states.get(target, True)

    def update(self, health: Health) -> bool:
        """Take serve's map; whether anything changed."""
        self.version = health.version
        if health.states == self.states:
            return False
        self.states = dict(health.states)
        return True


class ParentLink(service.Service):
    """A worker's end of its link to serve: reloads when serve says (with serve's serials),
    follows serve's health, sends its counters every COUNTERS_INTERVAL, and stops the worker
    (``gone``) when serve is gone."""

    def __init__(
        self,
        sock: socket.socket,
        zones: ZoneService,
        table: HealthTable,
        counters: DnsCounters,
        reactor: Any,
        generation: int,
        gone: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.zones = zones
        self.table = table
        self.counters = counters
        self.reactor = reactor
        self.generation = generation  # of the Hello its zones were loaded with
        self.gone = gone
        self.channel = Channel(self._received, self._lost)
        self._pending: Reload | None = None
        self._busy = False
        self._counting = task.LoopingCall(self._send_counters)
        self._counting.clock = reactor

    def startService(self) -> None:  # noqa: N802
        super().startService()
        adopt_channel(self.sock, self.channel, self.reactor)
        self._send_loaded(self.generation)
        self.channel.send(HealthApplied(self.table.version))
        self._counting.start(COUNTERS_INTERVAL, now=False)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._counting.running:
            self._counting.stop()

    def _send_counters(self) -> None:
        try:
            self.channel.send(self.counters)
        except Exception:  # a failing snapshot must not end the loop (LoopingCall would stop)
            log.failure("sending the counters to serve")

    def _send_loaded(self, generation: int) -> None:
        last = self.zones.reloads.last
        if last is not None:
            self.channel.send(Loaded(generation, last, served_serials(self.zones.zones)))

    def _received(self, message: object) -> None:
        if isinstance(message, Reload):
            self._pending = message  # a newer one replaces one not started yet
            self._next()
        elif isinstance(message, Health):
            if self.table.update(message):
                self.zones.responder.health_changed()  # drop the answers of the old health
            self.channel.send(HealthApplied(message.version))
        else:
            log.error("unexpected message from serve: {kind}", kind=type(message).__name__)

    def _next(self) -> None:
        """Run the pending reload, one at a time: each continues from the serials serve sent."""
        if self._busy or self._pending is None:
            return
        message, self._pending = self._pending, None
        self._busy = True

        def done(result: object) -> object:
            self._busy = False
            self._send_loaded(message.generation)
            self._next()
            return result

        self.zones.reload(message.trigger, message.serials).addBoth(done)

    def _lost(self) -> None:
        if self.running:
            log.warn("serve is gone (its link closed): stopping")
            self.gone()
