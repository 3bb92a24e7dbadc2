"""Serving state: the current Responder, reloads that swap it whole, and the zone-file watcher."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from anycastedge.config.pop import DnsConfig
from anycastedge.config.zones import ServedSerial, load_zones, zone_files
from anycastedge.control.statefile import read_json, write_json
from anycastedge.dns.wire import Counts, PoolCounts, Responder
from anycastedge.dns.zone import Name, ZoneSet
from anycastedge.errors import ConfigError, Problem
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.geo import GeoLocator
from anycastedge.gslb.model import CheckTarget, DynamicRecord
from anycastedge.health.monitor import HealthMonitor

log = Logger()


@dataclass(slots=True)
class ReloadResult:
    """The outcome of one (re)load, for /status and logs."""

    at: float
    ok: bool
    trigger: str
    problems: list[str] = field(default_factory=list)


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in zone_files(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    for path in paths:  # files appearing or vanishing change the directory's mtime
        try:
            out.append((str(path), path.stat().st_mtime_ns, 0))
        except OSError:
            pass
    return tuple(out)


def read_serials(path: Path | None) -> dict[Name, ServedSerial]:
    """Serials served before this process, so they never go backwards across a restart."""
    if path is None:
        return {}
    try:
        data = read_json(path) or {}
        return {
            dns.name.from_text(zone): ServedSerial(str(item["digest"]), int(item["serial"]))
            for zone, item in data.items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warn("ignoring unreadable serial state {path}: {exc}", path=str(path), exc=exc)
        return {}


def write_serials(path: Path, serials: dict[Name, ServedSerial]) -> None:
    """Save the served serials (atomically)."""
    write_json(
        path, {z.to_text(): {"digest": s.digest, "serial": s.serial} for z, s in serials.items()}
    )


class ZoneService(service.MultiService):
    """Owns the served zone set; reload builds a new one and swaps one reference if it validates.

    It also owns the GSLB health monitor (a child service): each swap hands it the check targets
    of the new zones, and each change of a value's health drops the dynamic answers cached for it.
    """

    def __init__(
        self,
        pop: str,
        dns_config: DnsConfig,
        reactor: Any,
        paths: Sequence[Path] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.pop = pop
        self.config = dns_config
        self.serial_file = state_dir / "serials.json" if state_dir is not None else None
        self.serials = read_serials(self.serial_file)
        self.paths = list(paths) if paths is not None else [dns_config.zones]
        self.reactor: IReactorTime = reactor
        self.counts: Counts = {}
        self.pool_counts: PoolCounts = {}
        self.locator = self._locator()
        self.monitor = HealthMonitor(reactor, on_change=self._health_changed)
        self.monitor.setServiceParent(self)
        self._check_networks = [ipaddress.ip_network(n) for n in dns_config.check_networks]
        self.errors = 0
        self.dropped = 0
        self.reloads = {"success": 0, "failure": 0}
        self.history: list[ReloadResult] = []
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._watch: task.LoopingCall | None = None
        self._reloading: defer.Deferred[bool] | None = None
        self._again = False
        self.responder = self._responder(ZoneSet({}))

    def _locator(self) -> GeoLocator:
        geo = self.config.geo
        return GeoLocator(geo.networks, geo.mmdb)

    def _responder(self, zones: ZoneSet) -> Responder:
        c = self.config
        decider = Decider(self.locator, self.monitor.serving, limit=c.cache_size or 1)
        return Responder(
            zones,
            self.pop,
            c.max_udp_size,
            c.nsid,
            c.cache_size,
            self.counts,
            decider=decider,
            pool_counts=self.pool_counts,
        )

    def dynamic_records(self) -> list[DynamicRecord]:
        """Every dynamic record being served."""
        return [record for zone in self.zones for record in zone.dynamic.values()]

    def checked(self, target: CheckTarget) -> bool:
        """Whether ``target`` lies in ``dns.check_networks`` (others are served unchecked)."""
        address = ipaddress.ip_address(target.address)
        return any(address in network for network in self._check_networks)

    def _health_changed(self, target: CheckTarget, serving: bool) -> None:
        self.responder.health_changed()  # the monitor has logged the change

    @property
    def zones(self) -> ZoneSet:
        """The zone set in service."""
        return self.responder.zones

    def load(self) -> list[Problem]:
        """Load synchronously (start-up); raises ConfigError. Returns the warnings."""
        fingerprint = _fingerprint(self.paths)
        zones, warnings = load_zones(self.paths, self.config.soa, self.serials)
        self._swap(zones, fingerprint, "start", warnings)
        return warnings

    def _swap(
        self,
        zones: ZoneSet,
        fingerprint: Any,
        trigger: str,
        warnings: list[Problem],
        locator: GeoLocator | None = None,
    ) -> None:
        if locator is not None:
            self.locator = locator
        self.responder = self._responder(zones)
        targets = {t for r in self.dynamic_records() for t in r.targets}
        checked = {t for t in targets if self.checked(t)}
        for target in sorted(targets - checked, key=str):
            log.warn(
                "not checking {target}: outside dns.check_networks, served as up",
                target=str(target),
            )
        self.monitor.update(checked)
        self._fingerprint = fingerprint
        self.reloads["success"] += 1
        self._record(ReloadResult(time.time(), True, trigger, [str(w) for w in warnings]))
        for zone in zones:
            log.info("serving {zone} serial {serial}", zone=zone.origin, serial=zone.serial)
            self.serials[zone.origin] = ServedSerial(zone.digest, zone.serial)
        if self.serial_file is not None:
            try:
                write_serials(self.serial_file, self.serials)
            except OSError as exc:
                log.warn(
                    "cannot save zone serials in {path}: {exc}", path=self.serial_file, exc=exc
                )

    def _record(self, result: ReloadResult) -> None:
        self.history = (self.history + [result])[-10:]

    def reload(self, trigger: str = "signal") -> defer.Deferred[bool]:
        """Rebuild the whole zone set off the reactor thread; swap it in if it validates."""
        if self._reloading is not None:
            # The running reload may have read the files before this change: run once more.
            self._again = True
            return self._reloading
        fingerprint = _fingerprint(self.paths)
        previous = dict(self.serials)

        def build() -> tuple[ZoneSet, list[Problem], GeoLocator]:
            zones, warnings = load_zones(self.paths, self.config.soa, previous)
            return zones, warnings, self._locator()  # a reload also rereads the GeoIP database

        reactor: IReactorThreads = self.reactor  # type: ignore[assignment]
        d: defer.Deferred[tuple[ZoneSet, list[Problem], GeoLocator]] = threads.deferToThreadPool(
            self.reactor, reactor.getThreadPool(), build
        )

        def ok(result: tuple[ZoneSet, list[Problem], GeoLocator]) -> bool:
            self._swap(result[0], fingerprint, trigger, result[1], result[2])
            for warning in result[1]:
                log.warn("zone warning: {w}", w=str(warning))
            return True

        def failed(failure: Any) -> bool:
            self._fingerprint = fingerprint  # do not retry until the files change again
            self.reloads["failure"] += 1
            problems = (
                [str(p) for p in failure.value.problems]
                if failure.check(ConfigError)
                else [repr(failure.value)]
            )
            self._record(ReloadResult(time.time(), False, trigger, problems))
            log.error(
                "reload rejected, still serving the previous zones:\n{problems}",
                problems="\n".join(f"- {p}" for p in problems),
            )
            return False

        def done(result: bool) -> bool:
            self._reloading = None
            if self._again:
                self._again = False
                self.reload(trigger)
            return result

        self._reloading = d.addCallbacks(ok, failed).addBoth(done)
        return self._reloading

    def check_files(self) -> defer.Deferred[bool] | None:
        """Reload if any zone file changed since the last (attempted) load."""
        if self._reloading is None and _fingerprint(self.paths) != self._fingerprint:
            return self.reload("file change")
        return None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self.config.watch_interval > 0:
            self._watch = task.LoopingCall(self.check_files)
            self._watch.clock = self.reactor
            self._watch.start(self.config.watch_interval, now=False)

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        return super().stopService()  # type: ignore[no-any-return]
