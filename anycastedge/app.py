"""The one wiring module: assembles everything ``serve`` runs from a validated PopConfig.

Parts never build each other: the zone service is handed a build function, the GSLB decider a
view of the health monitor, the control endpoint a read-only view of the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
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
from anycastedge.dns.server import DnsDatagramProtocol, DnsStreamFactory
from anycastedge.dns.service import Built, Serials, ZoneService
from anycastedge.dns.wire import Responder
from anycastedge.dns.zone import ZoneSet
from anycastedge.errors import ConfigError, Problem
from anycastedge.forward.service import ForwardService
from anycastedge.gslb.checks import GslbChecks
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.geo import GeoLocator
from anycastedge.health.check import CheckTarget
from anycastedge.health.monitor import HealthMonitor

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


def _builder(config: PopConfig, counters: DnsCounters, gslb: GslbChecks) -> Any:
    dns = config.dns

    def build(serials: Serials, current: ZoneSet) -> Built:
        zones, warnings = load_zones([dns.zones], dns.soa, serials, current)
        # A reload rereads the GeoIP database too; the reader is closed by garbage collection
        # once no Responder uses it.
        mmdb = dns.geo.mmdb
        database = maxminddb.open_database(str(mmdb)) if mmdb is not None else None
        locator = GeoLocator(dns.geo.networks, database)
        decider = Decider(locator, gslb.monitor.serving, limit=dns.cache_size or 1)
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
    forward: ForwardService | None
    config: PopConfig

    def reload(self, trigger: str) -> Deferred[bool]:
        """What SIGHUP and POST /reload do: pop.yaml's ``forward:`` applied anew (if pop.yaml
        came from a file and still validates), then the zones reloaded; the zones' outcome."""
        if self.forward is not None and self.config.source is not None:
            reload_forward(self.forward, self.config.source)
        return self.zones.reload(trigger)


def reload_forward(forward: ForwardService, source: Path) -> bool:
    """Apply the ``forward:`` section of pop.yaml as it is now; a broken file changes nothing."""
    try:
        config = load_pop(source)
    except ConfigError as exc:
        log.error(
            "pop.yaml rejected, forwarding unchanged:\n{problems}",
            problems="\n".join(f"- {p}" for p in exc.problems),
        )
        return False
    forward.apply(config.forward)
    log.info("forwarding configuration applied from {source}", source=str(source))
    return True


def build_app(config: PopConfig, reactor: Any) -> App:
    """Everything ``anycastedge serve`` runs, zones loaded; raises ConfigError if they are not."""
    dns: DnsConfig = config.dns
    top = service.MultiService()
    counters = DnsCounters()
    zones: ZoneService

    def health_changed(target: CheckTarget, serving: bool) -> None:
        zones.responder.health_changed()  # the monitor has logged the change
        gslb.review()

    gslb = GslbChecks(
        HealthMonitor(reactor, on_change=health_changed),
        tuple(ipaddress.ip_network(n) for n in dns.check_networks),
    )
    zones = ZoneService(
        _builder(config, counters, gslb),
        lambda: zone_fingerprint([dns.zones]),
        reactor,
        dns.watch_interval,
        config.state_dir,
        on_swap=lambda built: gslb.serve(
            [r for zone in built.responder.zones for r in zone.dynamic.values()]
        ),
    )
    warnings = zones.load()  # raises ConfigError: a server never starts without its zones
    gslb.monitor.setServiceParent(top)
    zones.setServiceParent(top)
    forward = _forwarding(config, reactor, top)
    stream = DnsStreamFactory(zones, reactor, dns.tcp_idle_timeout, dns.tcp_max_connections)
    for host, port in dns.listen:
        udp = internet.UDPServer(port, DnsDatagramProtocol(zones), interface=host, reactor=reactor)
        udp.setServiceParent(top)
        tcp = internet.TCPServer(port, stream, interface=host, backlog=1024, reactor=reactor)
        tcp.setServiceParent(top)
    app = App(top, zones, warnings, forward, config)
    if config.control.listen is not None:
        view = ServerView(
            config, zones, counters, gslb.monitor, gslb.probed, app.reload, forward=forward
        )
        host, port = config.control.listen
        site = control_site(view, make_registry(view))
        internet.TCPServer(port, site, interface=host, reactor=reactor).setServiceParent(top)
    return app


def _forwarding(
    config: PopConfig, reactor: Any, top: service.MultiService
) -> ForwardService | None:
    """The forwarding tier and its own health monitor (endpoints count as down until checked)."""
    if not config.forward.listeners and not config.forward.backends:
        return None
    forward: ForwardService
    monitor = HealthMonitor(
        reactor,
        assume_up=False,
        on_result=lambda target, ok, serving: forward.check_result(target, ok, serving),
    )
    forward = ForwardService(config.forward, reactor, monitor.update)
    monitor.setServiceParent(top)
    forward.setServiceParent(top)
    return forward
