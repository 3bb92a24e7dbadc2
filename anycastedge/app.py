"""The one wiring module: assembles everything ``serve`` runs from a validated PopConfig.

Parts never build each other: the zone service is handed a build function, the GSLB decider a
view of the health monitor, the control endpoint a read-only view of the server.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from twisted.application import internet, service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from anycastedge.config.pop import DnsConfig, PopConfig, load_pop
from anycastedge.config.zones import load_zones, zone_files
from anycastedge.control.http import control_site
from anycastedge.control.metrics import make_registry
from anycastedge.control.view import ServerView
from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.rrl import RateLimiter
from anycastedge.dns.server import DnsDatagramProtocol, DnsStreamFactory
from anycastedge.dns.service import Built, Serials, ZoneService
from anycastedge.dns.tcp_limits import TcpLimits
from anycastedge.dns.wire import Responder
from anycastedge.dns.workers import DnsWorkers, HealthTable, Hello, ParentLink, adopt_dns
from anycastedge.dns.zone import ZoneSet
from anycastedge.errors import ConfigError, Problem
from anycastedge.forward.haproxy import HaproxyEngine
from anycastedge.forward.haproxy_render import Runtime
from anycastedge.forward.model import ForwardConfig
from anycastedge.forward.service import ForwardService
from anycastedge.forward.workers import (
    SharedSockets,
    WorkerSupervisor,
    stream_listeners,
    streams_only,
)
from anycastedge.gslb.checks import GslbChecks
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.geo import GeoLocator
from anycastedge.health.check import CheckTarget
from anycastedge.health.monitor import HealthMonitor
from anycastedge.privileges import planned_user

log = Logger()


def zone_fingerprint(paths: list[Path]) -> Hashable:
    """The zone files that exist, with mtime and size: other files in the directory never count."""
    out = []
    for path in zone_files(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _builder(
    config: PopConfig, counters: DnsCounters, serving: Callable[[CheckTarget], bool]
) -> Any:
    dns = config.dns

    def build(serials: Serials, current: ZoneSet) -> Built:
        zones, warnings = load_zones([dns.zones], dns.soa, serials, current)
        # A reload rereads the GeoIP database too; the reader is closed by garbage collection
        # once no Responder uses it.
        mmdb = dns.geo.mmdb
        database = maxminddb.open_database(str(mmdb)) if mmdb is not None else None
        locator = GeoLocator(dns.geo.networks, database)
        decider = Decider(locator, serving, limit=dns.cache_size or 1)
        responder = Responder(
            zones, config.pop, dns.max_udp_size, dns.nsid, dns.cache_size, counters, decider=decider
        )
        return Built(responder, tuple(warnings))

    return build


@dataclass(frozen=True, slots=True)
class App:
    """What ``serve`` runs, and what loading the zones warned about."""

    service: service.MultiService
    zones: ZoneService
    warnings: tuple[Problem, ...]
    forward: ForwardService | HaproxyEngine | None
    config: PopConfig
    workers: WorkerSupervisor | None = None  # forward: {workers: N} with N > 1
    dns_workers: DnsWorkers | None = None  # dns: {workers: N} with N > 1

    def reload(self, trigger: str) -> Deferred[bool]:
        """What SIGHUP and POST /reload do: pop.yaml's ``forward:`` applied anew (if pop.yaml
        came from a file and still validates; SIGHUP passed on to the forwarding workers),
        then the zones reloaded; the zones' outcome (with DNS workers: once every one has
        answered, whether all reloaded)."""
        if self.forward is not None and self.config.source is not None:
            applied = reload_forward(self.forward, self.config.source)
            if applied is not None and self.workers is not None:
                if applied.workers != self.workers.count:
                    log.warn("forward.workers changed to {new}: serve runs {old} until it is "
                             "restarted", new=applied.workers,
                             old=self.workers.count)  # fmt: skip
                self.workers.reload()
        # A Deferred of our own: the zone service hands the same one to every caller while a
        # reload runs, and callbacks added to it would change what the others get.
        outcome: Deferred[bool] = Deferred()

        def relay(ok: bool) -> bool:
            outcome.callback(ok)
            return ok

        self.zones.reload(trigger).addCallback(relay)
        dns_workers = self.dns_workers
        if dns_workers is None:
            return outcome
        # A rejected reload is not passed on: the workers keep serving what serve serves.
        return outcome.addCallback(lambda ok: dns_workers.settled() if ok else False)


def reload_forward(
    forward: ForwardService | HaproxyEngine, source: Path, worker: bool = False
) -> ForwardConfig | None:
    """Apply the ``forward:`` section of pop.yaml as it is now (a ``worker`` leaves its UDP
    listeners to serve); what was applied, or None: a broken file changes nothing."""
    try:
        config = load_pop(source)
    except ConfigError as exc:
        log.error(
            "pop.yaml rejected, forwarding unchanged:\n{problems}",
            problems="\n".join(f"- {p}" for p in exc.problems),
        )
        return None
    running = "haproxy" if isinstance(forward, HaproxyEngine) else "builtin"
    if config.forward.engine != running:
        log.error("forward.engine changed to {new}: forwarding unchanged, on {old} until serve "
                  "is restarted", new=config.forward.engine, old=running)  # fmt: skip
        return None
    forward.apply(streams_only(config.forward) if worker else config.forward)
    log.info("forwarding configuration applied from {source}", source=str(source))
    return config.forward


def build_app(config: PopConfig, reactor: Any) -> App:
    """Everything ``anycastedge serve`` runs, zones loaded; raises ConfigError if they are not."""
    dns: DnsConfig = config.dns
    top = service.MultiService()
    counters = DnsCounters()
    zones: ZoneService
    dns_workers: DnsWorkers | None = None

    def health_changed(target: CheckTarget, serving: bool) -> None:
        zones.responder.health_changed()  # the monitor has logged the change
        gslb.review()
        if dns_workers is not None:
            dns_workers.health_changed()

    def swapped(built: Built) -> None:
        gslb.serve([r for zone in built.responder.zones for r in zone.dynamic.values()])
        if dns_workers is not None:
            dns_workers.swapped()
            dns_workers.health_changed()  # the targets checked may have changed

    monitor = HealthMonitor(reactor, on_change=health_changed)
    gslb = GslbChecks(monitor, tuple(ipaddress.ip_network(n) for n in dns.check_networks))
    zones = ZoneService(
        _builder(config, counters, monitor.serving),
        lambda: zone_fingerprint([dns.zones]),
        reactor,
        dns.watch_interval,
        config.state_dir,
        on_swap=swapped,
    )
    warnings = zones.load()  # raises ConfigError: a server never starts without its zones
    monitor.setServiceParent(top)
    zones.setServiceParent(top)
    forward, workers = _forwarding(config, reactor, top)
    udp_protocol, stream, limiter = dns_handlers(config, zones, reactor, counters)
    if dns.workers > 1:
        dns_workers = _dns_workers(config, reactor, zones, counters, monitor, udp_protocol, stream)
        dns_workers.setServiceParent(top)
    else:
        for host, port in dns.listen:
            udp = internet.UDPServer(port, udp_protocol(), interface=host, reactor=reactor)
            udp.setServiceParent(top)
            tcp = internet.TCPServer(port, stream, interface=host, backlog=1024, reactor=reactor)
            tcp.setServiceParent(top)
    engine: ForwardService | HaproxyEngine | None = forward
    if config.forward.engine == "haproxy" and (config.forward.listeners or config.forward.backends):
        # Last: HAProxy starts with its service, once every socket of serve's own is bound.
        engine = _haproxy(config, reactor)
        engine.setServiceParent(top)
    app = App(top, zones, warnings, engine, config, workers, dns_workers)
    if config.control.listen is not None:
        view = ServerView(
            config, zones, counters, gslb.monitor, gslb.probed, app.reload, forward=engine,
            workers=workers.status if workers is not None else None,
            rrl=limiter,
            dns_totals=dns_workers.totals if dns_workers is not None else None,
            dns_workers=dns_workers.processes if dns_workers is not None else None,
        )  # fmt: skip
        host, port = config.control.listen
        site = control_site(view, make_registry(view))
        internet.TCPServer(port, site, interface=host, reactor=reactor).setServiceParent(top)
    return app


def _tcp_limits(dns: DnsConfig) -> TcpLimits:
    """pop.yaml's ``dns.tcp_*`` keys for the TCP factory."""
    return TcpLimits(
        idle_timeout=dns.tcp_idle_timeout,
        read_timeout=dns.tcp_read_timeout,
        max_connections=dns.tcp_max_connections,
        max_connections_per_client=dns.tcp_max_connections_per_client,
        max_queries=dns.tcp_max_queries,
    )


def dns_handlers(
    config: PopConfig, zones: ZoneService, reactor: Any, counters: DnsCounters
) -> tuple[Callable[[], DnsDatagramProtocol], DnsStreamFactory, RateLimiter | None]:
    """What reads the DNS sockets, in serve and in each DNS worker alike: a new UDP protocol per
    socket, one factory (one set of TCP limits) for every TCP socket of the process, and the
    process's response rate limiter (dns.rrl; None: off)."""
    dns = config.dns
    stream = DnsStreamFactory(zones, reactor, _tcp_limits(dns), counters.tcp)
    # One limiter for every UDP socket of the process (a client is one client whichever address
    # it asks); it outlives zone reloads. TCP is never limited.
    limiter = None if dns.rrl is None else RateLimiter(dns.rrl, time.monotonic, counters.rrl)
    return lambda: DnsDatagramProtocol(zones, limiter), stream, limiter


def _dns_workers(
    config: PopConfig,
    reactor: Any,
    zones: ZoneService,
    counters: DnsCounters,
    monitor: HealthMonitor,
    udp_protocol: Callable[[], DnsDatagramProtocol],
    stream: DnsStreamFactory,
) -> DnsWorkers:
    """dns: {workers: N > 1}: serve binds the DNS sockets, reads them, and starts N-1
    ``anycastedge dns worker`` processes that read them too (dns/workers.py)."""

    def command(index: int, fds: dict[str, int], link: int) -> list[str]:
        fd_args = [a for name, fd in fds.items() for a in ("--fd", f"{name}={fd}")]
        return [sys.executable, "-m", "anycastedge", "dns", "worker", "--worker", str(index),
                "--link", str(link), *fd_args]  # fmt: skip

    def health() -> dict[CheckTarget, bool]:
        return {target: status.serving for target, status in monitor.statuses().items()}

    # What a worker answers with: serve's configuration as serve runs it (command-line overrides
    # included, pop.yaml as it was at start), without what it does not serve.
    handed = dataclasses.replace(config, forward=ForwardConfig())
    return DnsWorkers(config.dns.workers, config.dns.listen, command, reactor, zones, counters,
                      handed, health, udp_protocol, stream)  # fmt: skip


def _haproxy(config: PopConfig, reactor: Any) -> HaproxyEngine:
    """forward.engine: haproxy: HAProxy rendered, checked (ConfigError if it refuses) and
    ready to start; run as the user serve switches to (it is started before serve switches)."""
    user = planned_user(config.user)
    group = grp.getgrgid(user.pw_gid).gr_name if user is not None else None
    runtime = Runtime.under(str(config.state_dir), user.pw_name if user else None, group)
    engine = HaproxyEngine(config.forward, runtime, reactor)
    engine.prepare()
    return engine


def _forwarding(
    config: PopConfig, reactor: Any, top: service.MultiService
) -> tuple[ForwardService | None, WorkerSupervisor | None]:
    """The forwarding tier and its own health monitor (endpoints count as down until checked);
    with ``workers`` > 1, the supervisor of the other processes sharing its TCP-based sockets."""
    if not config.forward.listeners and not config.forward.backends:
        return None, None
    if config.forward.engine == "haproxy":
        return None, None  # _haproxy's, started last
    forward: ForwardService
    monitor = HealthMonitor(
        reactor,
        assume_up=False,
        on_result=lambda target, ok, serving: forward.check_result(target, ok, serving),
    )
    supervisor = None
    shared = None
    source = config.source
    if config.forward.workers > 1 and stream_listeners(config.forward) and source is not None:
        shared = SharedSockets({}, worker=False)

        def command(index: int, fds: dict[str, int]) -> list[str]:
            fd_args = [a for name, fd in fds.items() for a in ("--fd", f"{name}={fd}")]
            return [sys.executable, "-m", "anycastedge", "forward", "worker", "-c", str(source),
                    "--worker", str(index), *fd_args]  # fmt: skip

        supervisor = WorkerSupervisor(config.forward, command, shared, reactor, os.getpid())
    forward = ForwardService(config.forward, reactor, monitor.update, shared=shared)
    monitor.setServiceParent(top)
    if supervisor is not None:
        supervisor.setServiceParent(top)  # before forward: it binds the sockets forward adopts
    forward.setServiceParent(top)
    return forward, supervisor


@dataclass(frozen=True, slots=True)
class Worker:
    """What ``anycastedge forward worker`` runs: serve's TCP-based listeners on its sockets."""

    service: service.MultiService
    forward: ForwardService
    source: Path

    def reload(self) -> None:
        """What SIGHUP (passed on by serve) does: pop.yaml's ``forward:`` applied anew."""
        reload_forward(self.forward, self.source, worker=True)


# Bound of a worker's wait for the first check of every endpoint before it starts accepting.
READY_WAIT = 10.0


class _ListenWhenChecked(service.Service):
    """Adds a worker's ForwardService (its listeners) once every endpoint has had a first
    check, or after READY_WAIT: until then its pools count them all down, and it would answer
    503 to connections it took from the shared socket that serve or another worker could serve."""

    def __init__(
        self,
        forward: ForwardService,
        top: service.MultiService,
        pending: set[CheckTarget],
        reactor: Any,
    ) -> None:
        self.forward, self.top, self.pending, self.reactor = forward, top, pending, reactor
        self.timer: Any = None

    def checked(self, target: CheckTarget) -> None:
        """A first (or later) result for ``target``."""
        self.pending.discard(target)
        if not self.pending and self.running:
            self.open()

    def open(self) -> None:
        """Start listening (once)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.forward.parent is None:
            if self.pending:
                log.warn("{n} endpoint check(s) still unanswered after {wait:g} s: listening "
                         "anyway", n=len(self.pending), wait=READY_WAIT)  # fmt: skip
            self.forward.setServiceParent(self.top)  # starts it: top is running

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if not self.pending:
            self.reactor.callLater(0, self.open)  # once top has started all it holds
        else:
            self.timer = self.reactor.callLater(READY_WAIT, self.open)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


def build_worker(config: PopConfig, reactor: Any, sockets: dict[str, socket.socket]) -> Worker:
    """A forwarding worker: ``sockets`` (inherited from serve) adopted for the listeners they
    are named after, its own health monitor for the backends; no DNS, no control endpoint."""
    if config.source is None:
        raise ConfigError([Problem("a forwarding worker needs pop.yaml as a file (-c)")])
    top = service.MultiService()
    forward: ForwardService
    wanted: list[CheckTarget] = []

    def update(targets: list[CheckTarget]) -> None:
        wanted[:] = targets
        monitor.update(targets)

    def on_result(target: CheckTarget, ok: bool, serving: bool) -> None:
        forward.check_result(target, ok, serving)
        gate.checked(target)

    monitor = HealthMonitor(reactor, assume_up=False, on_result=on_result)
    shared = SharedSockets(dict(sockets), worker=True)
    forward = ForwardService(streams_only(config.forward), reactor, update, shared=shared)
    gate = _ListenWhenChecked(forward, top, set(wanted), reactor)
    monitor.setServiceParent(top)
    gate.setServiceParent(top)
    return Worker(top, forward, config.source)


@dataclass(frozen=True, slots=True)
class DnsWorker:
    """What ``anycastedge dns worker`` runs: the zones, the responder and the DNS protocols on
    serve's sockets, and its link to serve; no control endpoint, no health checks."""

    service: service.MultiService
    zones: ZoneService
    warnings: tuple[Problem, ...]


def build_dns_worker(
    hello: Hello,
    reactor: Any,
    sockets: dict[str, socket.socket],
    link: socket.socket,
    gone: Callable[[], None],
) -> DnsWorker:
    """A DNS worker answering as serve does: serve's configuration, its serials and its GSLB
    health (from ``hello``), the zones loaded now (ConfigError if they do not load), ``sockets``
    (inherited from serve) read once it has started; ``gone`` is called when serve is."""
    config: PopConfig = hello.config
    counters = DnsCounters()
    table = HealthTable(hello.health)
    # No state directory: serve alone writes serials.json, and the worker continues from the
    # serials serve sends. No watcher: serve's reloads are passed on.
    zones = ZoneService(
        _builder(config, counters, table.serving),
        lambda: zone_fingerprint([config.dns.zones]),
        reactor,
    )
    zones.serials = dict(hello.serials)
    warnings = zones.load()
    top = service.MultiService()
    zones.setServiceParent(top)
    udp_protocol, stream, _ = dns_handlers(config, zones, reactor, counters)
    adopt_dns(sockets, udp_protocol, stream, reactor).setServiceParent(top)
    ParentLink(link, zones, table, counters, reactor, hello.generation, gone).setServiceParent(top)
    return DnsWorker(top, zones, warnings)
